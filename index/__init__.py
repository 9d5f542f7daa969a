"""newsdesk's article index: loading, chunking, embedding, the Chroma store and re-indexing."""
