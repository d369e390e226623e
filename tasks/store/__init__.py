"""The artifact store under every step: keyed folders with manifests (``artifacts``), the environment each
records (``environment``), the champion (``champion``), run records (``runs``) and disk hygiene
(``cleanup``)."""
