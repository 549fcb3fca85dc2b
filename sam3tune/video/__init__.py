"""SAM 3 on video: the tuned detector inside transformers' video model, streamed prediction, video metrics."""
