"""triplets → tokens → model: token ids made once (``tokens``), what is trained and how it runs
(``recipe``), the machine: its device (``devices``), attention kernel (``attention``) and memory
(``memory``: the cached loss when a batch would not fit), batches that only pad (``batches``,
``sampler``), the losses (``losses``), checkpoints (``checkpoints``), speed (``throughput``: a forward
pass's cost, samples and tokens per second), the trainer run itself (``trainer``) and data-parallel
launches (``distributed``). The precision that runs is ``tasks.models.precision``'s."""
