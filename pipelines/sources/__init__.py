"""onegen.pipelines.sources: where raw items come from and how one is read, checked and listed.

One module per kind of source (image folders, tables, WebDataset tars, scene folders and their
cameras), the streamed listing cut into ingest parts, validation of one raw image, and images stored
by reference. No Ray here: the ingest job (pipelines/jobs/ingest.py) runs these on workers.
"""
