"""The HTTP face: a FastAPI application over the core, served by uvicorn (``cliplabel serve``)."""
