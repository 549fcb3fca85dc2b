"""sam3tune: fine-tune Meta's SAM 3 on your own data with the official training recipe.

Pipeline (one package per stage): ``data`` -> ``model`` -> ``loss`` -> ``train`` -> ``eval`` / ``predict``.
"""

__version__ = "0.1.0"

import logging as _logging

# peft imports bitsandbytes when it is installed (the qlora extra); on CPUs with AVX512-BF16 its import
# warns that an optional inference kernel package is missing, on every command. sam3tune never uses that
# inference kernel (see sam3tune.model.quantization), so the warning is only noise.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
