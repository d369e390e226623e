"""pairs → triplets: the negative strategies (``strategies``: soft, contradiction, semi-hard), the FAISS
search that semi-hard mining ranks with (``index``), and the embedding cache it encodes into
(``embeddings``)."""
