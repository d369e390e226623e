"""Work that fans out past this process: a Dask cluster for encoding and search (``connection``, ``encoding``)."""
