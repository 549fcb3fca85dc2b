import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Every test starts from the same global RNG state, on one intra-op thread.

    The tests run tiny models made of many small ops: one thread is as fast on an idle machine and
    many times faster on a busy one (2 threads measured up to 70x slower under contention).
    """
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def video_tracker_source(tmp_path_factory):
    """A random SAM 3 video model of the ``demo`` architecture saved by transformers, shaped like
    ``facebook/sam3`` (``detector_model.*``, ``tracker_model.*``, ``tracker_neck.*``): a tracker source."""
    from sam3tune.model.architectures import NAMED_ARCHITECTURES
    from sam3tune.video.model import save_random_video_model

    return save_random_video_model(
        NAMED_ARCHITECTURES["demo"], tmp_path_factory.mktemp("sam3-video") / "m", seed=0
    )


@pytest.fixture(scope="session")
def video_model_dir(tmp_path_factory, video_tracker_source):
    """The shipped demo base (the detector) exported as a video model beside the random tracker."""
    from sam3tune.demo.base import base_model_dir
    from sam3tune.ship.video_export import export_video_folder

    out = tmp_path_factory.mktemp("video-export") / "model"
    export_video_folder(str(base_model_dir()), out, tracker=str(video_tracker_source))
    return out
