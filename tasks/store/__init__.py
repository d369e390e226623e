"""The artifact store under every step: keyed folders with manifests (``artifacts``) and their build locks
(``locks``), the environment each records (``environment``), the champion's record (``champion``), run
records (``runs``) and disk hygiene (``cleanup``)."""
