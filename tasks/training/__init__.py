"""triplets → tokens → model: token ids made once (``tokens``), what is trained and how it runs
(``recipe``), the machine's policy (``hardware``), batches that only pad (``batches``, ``sampler``), the
losses (``losses``), checkpoints (``checkpoints``), throughput (``throughput``), the trainer run itself
(``trainer``) and data-parallel launches (``distributed``)."""
