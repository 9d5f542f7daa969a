"""newsdesk's article index: loading, chunking, embedding, the Chroma store and re-indexing."""

import os

# Idle OpenBLAS threads spin for a long while (about 0.1 s) after each matrix product before they sleep. The USE
# encoder runs two of them while indexing, and their spinning took the cores from the indexer's own writer
# thread and the Chroma client (and from anything else on the machine). OpenBLAS reads this when numpy loads
# it, so it is set here, before any module of this package imports numpy; a value already set wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
