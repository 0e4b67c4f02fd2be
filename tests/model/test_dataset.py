"""The tf.data reader: parsing, masking, augmentation, class weights, real Earth Engine exports, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from model.dataset import (
    FIT,
    SELECTION,
    PatchReader,
    augment,
    check_data_matches_model,
    class_weights_from_counts,
    jitter_bands,
    list_records,
    load_data_manifest,
    make_batches,
    read_patches,
    scan_statistics,
    with_weights,
)
from model.errors import IncompatibleDataError
from model.synthetic import write_synthetic_extraction
from tests.helpers.environment import SHARED_DATA
from transforms.contracts.classes import CLASS_NAMES, S2_BANDS
from transforms.contracts.manifest import read_manifest, schema_of
from transforms.contracts.schema import LABEL_NODATA, PatchSchema

EE_PATCHES = SHARED_DATA / "gcp-landcover" / "v2_e9b63f3"


@pytest.fixture(scope="module")
def extraction(tmp_path_factory) -> str:
    return write_synthetic_extraction(tmp_path_factory.mktemp("data"), train_patches=20, validation_patches=6)


def _patches(data: str, split: str = "train", mode: str = "segmentation"):
    manifest = read_manifest(data)
    reader = PatchReader(schema_of(manifest), len(manifest["classes"]), mode)
    return read_patches(manifest["splits"][split]["files"], reader, compression="GZIP")


def test_reads_patches_and_drops_the_fully_masked_one(extraction):
    inputs, labels = next(iter(_patches(extraction).batch(100)))
    # 20 written, one all-zero (masked) patch dropped.
    assert inputs.shape == (19, 16, 16, 3) and inputs.dtype == tf.float32
    assert labels.shape == (19, 16, 16) and labels.dtype == tf.int32
    labels = labels.numpy()
    assert (labels[:, 0, :3] == LABEL_NODATA).all()
    assert set(np.unique(labels)) <= {0, 1, 2, LABEL_NODATA}
    assert not (inputs.numpy() == 0).all(axis=(1, 2, 3)).any()


def test_classification_labels_are_the_majority_class(extraction):
    (_, pixel_labels), (_, patch_labels) = (
        next(iter(_patches(extraction, mode=m).batch(100))) for m in ("segmentation", "classification")
    )
    assert patch_labels.shape == (19, 1, 1)
    for pixels, label in zip(pixel_labels.numpy(), patch_labels.numpy()[:, 0, 0]):
        assert label == np.bincount(pixels[pixels != LABEL_NODATA]).argmax()


def test_batches_carry_class_weights_and_zero_weight_for_nodata(extraction):
    batches = make_batches(
        _patches(extraction), batch_size=8, class_weights=[0.5, 1.0, 2.0], shuffle=True, seed=3
    )
    for _, labels, weights in batches:
        labels, weights = labels.numpy(), weights.numpy()
        assert (weights[labels == LABEL_NODATA] == 0).all()
        for cls, w in enumerate((0.5, 1.0, 2.0)):
            assert (weights[labels == cls] == w).all()


def test_full_batches_only_leave_out_fewer_than_a_batch(extraction):
    sizes = [len(x) for x, _, _ in make_batches(_patches(extraction), batch_size=8)]
    full = [len(x) for x, _, _ in make_batches(_patches(extraction), batch_size=8, drop_remainder=True)]
    assert sizes[-1] < 8 and full == [8] * (sum(sizes) // 8)


def test_repeated_batches_are_epochs_of_full_batches_each_reshuffled(extraction):
    patches = _patches(extraction)
    total = sum(1 for _ in patches)
    epoch = total // 8
    batches = make_batches(patches, batch_size=8, shuffle=True, seed=3, drop_remainder=True, repeat=True)
    firsts = [x.numpy()[:, 0, 0, 0] for x, _, _ in batches.take(3 * epoch)]
    assert all(len(f) == 8 for f in firsts)  # no short batch where one epoch ends and the next begins
    epochs = [np.concatenate(firsts[e * epoch : (e + 1) * epoch]) for e in range(3)]
    assert all(len(np.unique(e)) == len(e) for e in epochs)  # no patch twice within an epoch
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled


def test_augmentation_moves_inputs_labels_and_weights_together():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, (32, 8, 8)).astype(np.int32)
    inputs = np.stack([labels.astype(np.float32), rng.normal(size=labels.shape).astype(np.float32)], axis=-1)
    _, _, weights = with_weights(inputs, labels, [float(c + 1) for c in range(9)])
    x, y, w = (t.numpy() for t in augment(tf.constant(inputs), tf.constant(labels), weights))
    np.testing.assert_array_equal(x[..., 0], y)
    np.testing.assert_array_equal(w, y + 1.0)
    assert not np.array_equal(y, labels)  # 32 coin triples: some patch was transformed
    for before, after in zip(labels, y):  # each patch is one of the 8 symmetries of the original
        variants = [np.rot90(v, k) for v in (before, before.T) for k in range(4)]
        assert any(np.array_equal(after, v) for v in variants)


def test_band_jitter_scales_whole_bands_per_patch_and_adds_noise_in_band_units():
    tf.random.set_seed(0)
    inputs = tf.fill((256, 16, 16, 2), 1000.0)
    band_std = [100.0, 1.0]
    gains_only = jitter_bands(inputs, 0.05, [0.0, 0.0]).numpy()
    # One gain per patch and band: constant over the patch, spread 0.05 around 1 across patches.
    assert np.allclose(gains_only, gains_only[:, :1, :1, :])
    assert np.std(gains_only[:, 0, 0, :] / 1000.0) == pytest.approx(0.05, rel=0.15)
    assert np.mean(gains_only[:, 0, 0, :] / 1000.0) == pytest.approx(1.0, abs=0.01)
    jittered = jitter_bands(inputs, 0.1, band_std).numpy()
    noise = jittered - jittered.mean(axis=(1, 2), keepdims=True)  # the per-pixel part
    assert np.std(noise[..., 0]) == pytest.approx(10.0, rel=0.1)  # 0.1 of a std of 100
    assert np.std(noise[..., 1]) == pytest.approx(0.1, rel=0.1)
    masked = tf.tensor_scatter_nd_update(inputs, [[0, 3, 4]], [[0.0, 0.0]])
    assert np.all(jitter_bands(masked, 0.1, band_std).numpy()[0, 3, 4] == 0.0)


def test_radiometric_augmentation_leaves_labels_and_weights_alone(extraction):
    manifest = read_manifest(extraction)
    reader = PatchReader(schema_of(manifest), 3)
    patches = read_patches(manifest["splits"]["train"]["files"], reader, compression="GZIP")
    plain = next(iter(make_batches(patches, batch_size=4, class_weights=[1.0, 2.0, 3.0])))
    jittered = next(
        iter(
            make_batches(
                patches, batch_size=4, class_weights=[1.0, 2.0, 3.0], radiometric=0.1, band_std=[1.0] * 3
            )
        )
    )
    np.testing.assert_array_equal(plain[1], jittered[1])
    np.testing.assert_array_equal(plain[2], jittered[2])
    assert not np.allclose(plain[0], jittered[0])
    with pytest.raises(ValueError, match="standard deviations"):
        make_batches(patches, batch_size=4, radiometric=0.1)


def test_class_weights_lift_rare_classes():
    weights = class_weights_from_counts([1000, 100, 10, 0], power=0.5)
    assert weights[3] == 0.0
    assert weights[2] > weights[1] > weights[0]
    freq = np.array([1000, 100, 10, 0]) / 1110
    assert float(np.dot(weights, freq)) == pytest.approx(1.0, abs=1e-5)
    assert class_weights_from_counts([5, 5], power=0.0) == [1.0, 1.0]


def test_statistics_reject_labels_beyond_the_classes(extraction):
    manifest = read_manifest(extraction)
    reader = PatchReader(schema_of(manifest), 2)  # the data has 3 classes
    patches = read_patches(manifest["splits"]["train"]["files"], reader, compression="GZIP")
    with pytest.raises(IncompatibleDataError, match="label value 2, but only 2 classes"):
        scan_statistics(patches, 3, 2)


@pytest.mark.shared_data
def test_reads_real_earth_engine_exports_with_just_bands_and_patch_size():
    if not EE_PATCHES.exists():
        pytest.skip(f"{EE_PATCHES} not present")
    reader = PatchReader(PatchSchema(S2_BANDS, 16), len(CLASS_NAMES))
    patches = read_patches(list_records(str(EE_PATCHES / "validation")), reader)
    stats = scan_statistics(patches, len(S2_BANDS), len(CLASS_NAMES))
    # 325 patches, 9 of them fully masked (SOURCE.txt).
    assert stats.patches == 316
    assert sum(stats.class_counts) > 0.95 * 316 * 256
    # TOA reflectance ×10000: the visible bands average around 1000-2000.
    assert 500 < stats.mean[S2_BANDS.index("B4")] < 3000
    inputs, labels = next(iter(patches.batch(400)))
    assert inputs.shape == (316, 16, 16, 13)
    assert set(np.unique(labels.numpy())) <= set(range(9)) | {LABEL_NODATA}


def test_empty_folder_and_missing_classes_are_explained(tmp_path, extraction):
    with pytest.raises(IncompatibleDataError, match=r"No readable manifest .*pipelines\.extract"):
        load_data_manifest(str(tmp_path))
    with pytest.raises(IncompatibleDataError, match="No TFRecord files"):
        list_records(str(tmp_path))
    manifest = json.loads((Path(extraction) / "manifest.json").read_text())
    del manifest["classes"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleDataError, match="has no 'classes'"):
        load_data_manifest(str(tmp_path))


def test_bands_that_differ_from_the_model_are_explained(extraction):
    manifest = load_data_manifest(extraction)
    info = {"bands": ["b1", "b2", "elevation"], "classes": manifest["classes"]}
    with pytest.raises(IncompatibleDataError, match=r"missing \['elevation'\], extra \['b3'\]"):
        check_data_matches_model(info, manifest)
    info = {"bands": ["b3", "b2", "b1"], "classes": manifest["classes"]}
    with pytest.raises(IncompatibleDataError, match="other order"):
        check_data_matches_model(info, manifest)
    info = {"bands": ["b1", "b2", "b3"], "classes": ["a", "b", "c"]}
    with pytest.raises(IncompatibleDataError, match="predicts classes"):
        check_data_matches_model(info, manifest)


def _point_values(patches) -> list[float]:
    """One number per patch that identifies it (the synthetic spectra make patches distinct)."""
    return sorted(float(x[..., 0].numpy().sum()) for x, _ in patches)


def test_selection_carve_splits_the_records_in_two_by_content_the_same_every_time(tmp_path):
    data = write_synthetic_extraction(tmp_path / "d", train_patches=200, validation_patches=2, shards=3)
    manifest = read_manifest(data)
    reader = PatchReader(schema_of(manifest), 3)
    files = manifest["splits"]["train"]["files"]

    def read(subset, files=files):
        return _point_values(
            read_patches(files, reader, compression="GZIP", subset=subset, selection_fraction=0.2)
        )

    everything, fit, selection = read(None), read(FIT), read(SELECTION)
    assert sorted(fit + selection) == everything and not set(fit) & set(selection)
    assert 0.1 < len(selection) / len(everything) < 0.3
    # The same records whatever the shard order or the run.
    assert read(SELECTION, list(reversed(files))) == selection
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        read_patches(files, reader, subset=SELECTION, selection_fraction=0.0)
