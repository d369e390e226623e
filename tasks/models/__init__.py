"""Models, used by every step that loads one: which folder a name means (``resolve``) and how texts are
encoded with it (``encoding``)."""
