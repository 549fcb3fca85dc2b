"""Text-prompted detection and segmentation with a (fine-tuned) SAM 3: the :class:`Predictor` API
(``predictor.py``) and the ``sam3tune predict`` command (``command.py``, settings in ``config.py``)."""

from sam3tune.predict.predictor import IMAGE_SUFFIXES, Predictor, collect_images

__all__ = ["IMAGE_SUFFIXES", "Predictor", "collect_images"]
