"""Work that fans out past this process: a Dask cluster (``connection``) for encoding (``encoding``) and FAISS
search (``search``); training nodes are ``training/nodes.py``'s."""
