"""The bundled concept bank: concepts, synonyms, prompt templates and their sources (data files)."""
