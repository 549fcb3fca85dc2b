"""sam3tune: fine-tune Meta's SAM 3 on your own data with the official training recipe.

Pipeline (one package per stage): ``data`` -> ``model`` -> ``loss`` -> ``train`` -> ``eval`` / ``predict``.
"""

__version__ = "0.1.0"
