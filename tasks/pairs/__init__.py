"""raw → pairs: reading input tables (``tables``), the NLI sources (``sources``: hub or local), and the
label maps that turn NLI pairs into each loss's format (``labels``)."""
