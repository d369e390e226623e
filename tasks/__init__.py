"""The pipeline's library, one folder per step of the journey, the Prefect tasks above them.

    pairs/       raw → pairs        NLI sources (hub, local), input validation, label maps, the held-out split
    negatives/   pairs → triplets   soft / contradiction / semi-hard negatives, FAISS, embedding cache
    training/    triplets → tokens → model
                                    token ids, the recipe and its runtime, batches, sampler, losses,
                                    devices, attention kernels, memory, checkpoints, throughput, the trainer, torchrun
    evaluation/  model → metrics    bundled data, settings, STS-B, MTEB through mteb, held-out retrieval,
                                    the bootstrap, which scores compare alike
    promotion.py metrics → champion a challenger replaces the champion only by a real gain, evaluated alike
    report/      metrics → report   tables and plots
    shipping/    model → release    the release path (exports, their comparison, the folder), the card, the Hub
    models/      used by every step that loads a model: which folder a name means, the precision
                 that runs, how texts encode
    store/       under everything: the catalog of stages and files, keyed artifacts and manifests,
                 environment, champion, the typed run record, cleanup
    recipes.py   named recipes over the flow's parameters
    progress.py  Prefect progress artifacts
    stages/      the Prefect tasks: what keys each artifact, which plain function builds it (data, model, shipping)

Imports only point down this list's layers: store, models, pairs, then negatives / training /
evaluation (never one another), report and promotion, shipping, recipes and progress, stages; ``flows/`` sits on top
(``tests/test_recipes.py`` checks it).
"""
