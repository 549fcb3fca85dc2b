"""Data-side failure modes: each reproduced on a copy of the synthetic dataset, each asserting its flag."""

from sam3tune.doctor.diagnosis import diagnose
from tests.data.conftest import FRUITS_NUTS
from tests.doctor.conftest import rewrite_annotations, run_config


def test_dataset_without_targets(shapes, tmp_path):
    def all_crowd(annotation, width, height):
        annotation["iscrowd"] = 1

    report = diagnose(run_config(rewrite_annotations(shapes, tmp_path, all_crowd)))
    assert report.codes("error") == {"dataset_without_targets"}
    assert report.exit_status == 1
    assert report.losses is None  # no batch to run


def test_annotation_boxes_already_normalised(shapes, tmp_path):
    def normalise(annotation, width, height):
        x, y, w, h = annotation["bbox"]
        annotation["bbox"] = [x / width, y / height, w / width, h / height]
        annotation.pop("segmentation")

    report = diagnose(run_config(rewrite_annotations(shapes, tmp_path, normalise)))
    assert "annotation_boxes_normalised" in report.codes("error")
    flag = next(f for f in report.flags if f.code == "annotation_boxes_normalised")
    assert f"{report.data.targets} of {report.data.targets} objects" in flag.message


def test_annotation_boxes_written_as_corners(shapes, tmp_path):
    def corners(annotation, width, height):
        x, y, w, h = annotation["bbox"]
        annotation["bbox"] = [x, y, x + w, y + h]

    report = diagnose(run_config(rewrite_annotations(shapes, tmp_path, corners)))
    assert "annotation_boxes_clipped" in report.codes("warning")
    assert report.data.clipped_boxes >= 0.2 * report.data.targets


def test_many_tiny_objects_on_fruits_at_64_px():
    report = diagnose(run_config(FRUITS_NUTS))
    assert report.codes() == {"many_tiny_objects"}
    assert report.exit_status == 0  # a note, not an error
    # fruits_nuts: 18 images, 50 positive queries, 165 objects (docs/data.md, the inspector's counts)
    assert (report.data.images, report.data.positive_queries, report.data.targets) == (18, 50, 165)
    assert sum(n for _, n in report.data.objects_per_query.bins) == 50
    assert sum(n for _, n in report.data.object_sides.bins) == 165


def test_resolution_the_model_cannot_take(shapes):
    report = diagnose(run_config(shapes, "data.resolution=128"))
    assert report.codes("error") == {"data_unusable"}
    assert "data.resolution=128 but the model takes 64 px" in report.flags[0].message


def test_no_negatives_and_no_retention_prompts(shapes):
    report = diagnose(run_config(shapes, "data.negatives=none"))
    assert "no_negatives" in report.codes("warning")
    flag = next(f for f in report.flags if f.code == "no_negatives")
    assert flag.message == "0 negative queries per epoch (data.negatives=none) and retention.prompts is empty"
    assert "retention.prompts" in flag.fix and "data.negatives=all" in flag.fix
    # naming the concepts to keep answers it; so do negatives (the recipe's data.negatives=all)
    assert (
        "no_negatives"
        not in diagnose(run_config(shapes, "data.negatives=none", "retention.prompts=[cat]")).codes()
    )
    assert "no_negatives" not in diagnose(run_config(shapes)).codes()
