"""``sam3tune demo``: fine-tune a small pretrained SAM 3 on shapes it has never seen, on the CPU, and show
zero-shot next to tuned on held-out images (docs/demo.md).

``tasks`` (the synthetic concept tasks), ``recipe`` (the training runs), ``base`` (the shipped base
model), ``settings`` (what the demo does, its defaults), ``runner`` (the demo itself).
"""
