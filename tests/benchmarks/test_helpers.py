"""The benchmarks' bookkeeping: spreads over seeds, full settings of ablation configurations, imported
runs and the tables (the training itself is what tests/test_model_train.py covers); the prediction
benchmark's split of the job into a fixed part and a part per tile."""

from __future__ import annotations

import pytest

from benchmarks import model_ablation, model_quality
from model.train import TrainConfig


def _run(seed: int, iou: float, config: str = "baseline") -> dict:
    return {
        "seed": seed,
        "config": config,
        "settings": model_ablation.settings_of(config),
        "mean_iou": iou,
        "overall_accuracy": 0.7,
        "per_class_iou": {"water": 0.9, "built": None},
        "selection_mean_iou": iou - 0.05,
        "train_seconds": 100.0 + seed,
        "cpu_seconds": 180.0,
        "epochs_run": 30,
        "best_epoch": 24,
        "tta": {
            "mean_iou": iou + 0.001,
            "overall_accuracy": 0.71,
            "per_class_iou": {"water": 0.9, "built": 0.1},
        },
    }


def test_spread_is_mean_sample_std_and_range():
    s = model_quality.spread([0.47, 0.50, 0.53])
    assert s == {"mean": 0.5, "std": 0.03, "min": 0.47, "max": 0.53, "n": 3}
    assert model_quality.spread([0.4])["std"] == 0.0
    assert model_quality.pm(s) == "0.500 ± 0.030 (0.470–0.530)"


def test_run_summaries_average_per_class_iou_with_absent_classes_as_zero():
    summary = model_quality.summarize_runs([_run(0, 0.48), _run(1, 0.50)])
    assert summary["mean_iou"]["mean"] == pytest.approx(0.49)
    assert summary["per_class_iou"] == {"water": 0.9, "built": 0.0}
    assert summary["tta_mean_iou"]["mean"] == pytest.approx(0.491)
    assert summary["selection_mean_iou"]["mean"] == pytest.approx(0.44)


def test_ablation_configurations_spell_out_every_lever_and_combine():
    base = model_ablation.settings_of("baseline")
    assert base == model_ablation.BASELINE
    combined = model_ablation.settings_of("cosine-ema+label-smoothing+indices")
    assert combined == {
        **base,
        "schedule": "cosine",
        "epochs": model_ablation.EPOCHS,
        "ema": 0.99,
        "label_smoothing": 0.1,
        "spectral_indices": "auto",
    }
    for name in model_ablation.CONFIGS:  # every configuration is a valid model.train setting
        TrainConfig(**model_ablation.settings_of(name)).validate()
    with pytest.raises(ValueError, match="Unknown configuration 'swa'"):
        model_ablation.settings_of("cosine+swa")


def test_quality_runs_import_as_the_baseline_and_the_table_shows_deltas():
    quality = {"fcn": {"runs": [_run(0, 0.48), _run(1, 0.50)], "prediction_seconds_per_megapixel": 2.0}}
    imported = model_ablation.import_runs(quality, "model_quality.json")
    assert sorted(imported) == ["baseline#0", "baseline#1"]
    assert imported["baseline#0"]["settings"] == model_ablation.BASELINE
    results = {
        "runs": {**imported, "lovasz#0": _run(0, 0.52, "lovasz")},
        "prediction_cost": {"lovasz": {"ratio": 1.1}},
    }
    table = model_ablation.markdown(results, ["baseline", "lovasz"])
    row = next(line for line in table.splitlines() if line.startswith("| lovasz |"))
    assert "| +0.030 |" in row and "1.10×" in row
    assert "`lovasz`: " in table


def test_settings_from_the_command_line_are_typed_like_the_defaults():
    settings = model_quality.parse_settings(["schedule=cosine", "ema=0.99", "epochs=40", "band-roles=nir=B8"])
    assert settings == {"schedule": "cosine", "ema": 0.99, "epochs": 40, "band_roles": "nir=B8"}
    optional = model_quality.parse_settings(["depth=3", "dropout=0.3", "max-minutes=none", "xla=off"])
    assert optional == {"depth": 3, "dropout": 0.3, "max_minutes": None, "xla": "off"}
    assert type(optional["depth"]) is int
    with pytest.raises(ValueError, match="name=value"):
        model_quality.parse_settings(["speed=fast"])


def test_training_time_comes_apart_into_a_fixed_part_and_steady_epochs():
    from benchmarks.train_throughput import summarize

    def run(epochs: int, fit_s: float) -> dict:
        stages = {name: {"wall_s": 1.0, "cpu_s": 1.5} for name in ("load_data", "score", "export")}
        stages["fit"] = {"wall_s": fit_s, "cpu_s": 2 * fit_s}
        return {"epochs": epochs, "epochs_run": epochs, "fit_patches": 2556, "stages": stages}

    # 1 epoch in 30 s, 3 in 50 s: 10 s an epoch, 20 s of building and tracing; 80 epochs in 820 s.
    s = summarize(run(1, 30.0), run(3, 50.0), 80)
    assert (s["epoch_s"], s["epoch_cpu_s"], s["fit_fixed_s"]) == (10.0, 20.0, 20.0)
    assert s["patches_per_s"] == 255.6 and s["export_s"] == 1.0
    assert (s["whole_training_s"], s["whole_training_cpu_s"]) == (820.0, 1640.0)


def test_a_variant_names_its_recipe_length_apart_from_model_train_settings():
    from benchmarks.train_throughput import OLD_CODE, VARIANTS, speedups, split_settings
    from model.train import TrainConfig

    settings, epochs = split_settings(VARIANTS["before"])
    assert epochs == 80 and "epochs" not in settings and not set(OLD_CODE) & set(settings)
    assert set(OLD_CODE) <= set(VARIANTS["before"])  # the old code, not just the old settings
    for name in VARIANTS:  # the rest are model.train's
        TrainConfig(data="d", output="o", epochs=1, **split_settings(VARIANTS[name])[0]).validate()
    assert split_settings(VARIANTS["bf16"]) == ({"precision": "mixed_bfloat16"}, TrainConfig.epochs)

    def summary(epoch_s: float, whole_s: float, epochs: int = 80) -> dict:
        return {
            "summary": {
                "epoch_s": epoch_s,
                "epoch_cpu_s": 2 * epoch_s,
                "whole_training_s": whole_s,
                "whole_training_cpu_s": 2 * whole_s,
                "recipe_epochs": epochs,
            }
        }

    ratios = speedups({"default": summary(2.0, 100.0), "before": summary(4.0, 330.0)})
    assert ratios["default_vs_before"] == {
        "epoch_s": 2.0,
        "epoch_cpu_s": 2.0,
        "whole_training_s": 3.3,
        "whole_training_cpu_s": 3.3,
    }
    assert ratios["whole_training_speedup_vs_default"]["before"] == 0.3
    # A default of more epochs is compared with the recipe before over the same epochs: 100 s for 80
    # epochs of 2 s is 260 s for 160, 100 s again at 80.
    longer = speedups({"default": summary(2.0, 260.0, epochs=160), "before": summary(4.0, 330.0)})
    assert longer["default_vs_before"]["whole_training_s"] == 3.3
    assert longer["default_vs_before"]["whole_training_cpu_s"] == 3.3
    assert longer["whole_training_speedup_vs_default"]["before"] == round(260 / 330, 2)


def test_the_region_holdout_table_puts_the_forest_beside_the_model_with_their_ratio():
    from benchmarks import region_holdout

    def run(seed: int, iou: float, fold: int) -> dict:
        fcn = {**_run(seed, iou), "fold": fold, "per_class_iou": {"water": iou, "sediment": None}}
        return {k: v for k, v in fcn.items() if k != "tta"}

    result = {
        "data": "../shared/data/nc-landsat7",
        "extraction": "120 points per class, 32² patches, validation fraction 0.1",
        "folds": {
            str(k): {
                "split": {
                    "rule": "spatial-blocks-with-guard", "validation_fraction": 0.1, "block_size": 1824.0,
                    "points_in_guard_band": 219, "overlap": 0.0, "fold": k, "folds": 10,
                },
                "patches": {"train": 498, "validation": 123},
                "score_pixels": 1000,
            }
            for k in (0, 1)
        },
        "seeds": [0, 1],
        "machine": {"cpus": 2, "cpu_model": "AMD EPYC"},
        "command": "python -m benchmarks.region_holdout",
        "fcn": {"description": "model.train defaults", "runs": [run(0, 0.5, 0), run(0, 0.7, 1)]},
        "forest": {"description": "RandomForest per pixel (100 trees)", "runs": [run(0, 0.4, 0), run(0, 0.4, 1)]},
    }  # fmt: skip
    for key in ("fcn", "forest"):
        result[key]["summary"] = model_quality.summarize_runs(result[key]["runs"])
    table = region_holdout.markdown(result)
    assert "| mean IoU (mean ± std, min–max) | 0.600 ± 0.141 (0.500–0.700) | 0.400 ± 0.000" in table
    assert "| IoU sediment (mean of runs) | 0.000 | 0.000 |" in table  # absent from both: counted as 0
    assert "219 points left out in the guard band" in table and "(fold 1 of 10)" in table
    assert "| 1 | 0.700 | 0.400 |" in table  # each fold's means
    assert "FCN / forest mean IoU" in table and "1.50×" in table


def test_step_parts_count_a_models_multiply_adds_at_each_pooling_level():
    import keras

    from benchmarks.train_step_parts import multiply_adds

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8×8 × 3·3·3·4 = 6,912
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 1)(x)  # 4×4 × 4·8 = 512
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)  # 8×8 output pixels × 8·2 = 1,024
    assert multiply_adds(keras.Model(inputs, x), 8) == 6912 + 512 + 1024


def test_the_prediction_benchmark_splits_the_job_into_a_fixed_part_and_a_part_per_tile():
    from benchmarks.predict_throughput import fixed_and_per_tile

    def job(tiles: int) -> dict:
        return {"tiles": tiles, "wall_s": 6.0 + 0.07 * tiles}

    results = {
        "job": job(484),
        "job_2048": job(121),
        "job_8192": job(1849),
        "raw_predict": {"tiles": 484, "wall_s": 484 * 0.056},
    }
    split = fixed_and_per_tile(results, [2048, 8192])
    assert split["job_fixed_s"] == pytest.approx(6.0)
    assert split["job_s_per_tile"] == pytest.approx(0.07)
    assert split["job_vs_raw_predict_per_tile"] == pytest.approx(0.8)
    assert fixed_and_per_tile(results, []) == {}  # one size: no line


def test_the_old_code_variant_trains_with_keras_callbacks():
    import types

    import keras

    from benchmarks.train_throughput import use_keras_callbacks
    from model.callbacks import AveragedWeights, BestWeights, LogLearningRate

    best = BestWeights("val_loss", "best.weights.h5")
    training = types.SimpleNamespace(_callbacks=lambda *args: [LogLearningRate(), AveragedWeights(), best])
    use_keras_callbacks(training)
    callbacks = training._callbacks(None, "val_loss", best, 0.99, None)
    assert [type(c) for c in callbacks] == [
        LogLearningRate, keras.callbacks.SwapEMAWeights, keras.callbacks.ModelCheckpoint, BestWeights
    ]  # fmt: skip
    assert callbacks[1].swap_on_epoch and callbacks[2].save_best_only and callbacks[2].monitor == "val_loss"
    assert callbacks[2].filepath == "best.weights.h5"
    # BestWeights still chooses and reports the best epoch (fit() reads it), but keeps and writes nothing.
    best.on_epoch_end(0, {"val_loss": 0.5, "loss": 1.0})
    best.on_train_end()
    assert best.best_epoch == 0 and best.writes == 0 and best.path is None


def test_ensembles_average_their_members_probabilities_and_score_every_combination():
    import numpy as np

    from benchmarks.ensemble_quality import mean_iou, score_ensembles

    labels = np.array([[0, 0, 1, 1]])
    # Each member alone gets one pixel wrong; their mean gets every pixel right.
    a = np.array([[[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.1, 0.9]]])
    b = np.array([[[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.1, 0.9]]])
    classes = ["water", "built"]
    assert mean_iou(a, labels, classes) == pytest.approx(np.mean([1 / 2, 2 / 3]))
    found = {split: {"labels": labels, "a": a, "b": b} for split in ("selection", "validation")}
    rows = score_ensembles(found, {"long": ["a", "b"]}, [1, 2, 3], classes)
    assert set(rows) == {"long x1", "long x2"}  # no combination of 3 out of 2
    assert [r["members"] for r in rows["long x1"]["combinations"]] == [["a"], ["b"]]
    assert rows["long x2"]["validation_mean_iou"] == {"mean": 1.0, "std": 0.0}
    assert rows["long x1"]["selection_mean_iou"]["mean"] == pytest.approx(np.mean([1 / 2, 2 / 3]), abs=1e-4)


def test_results_record_the_thread_settings_a_run_had(monkeypatch):
    from benchmarks.machine import machine

    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.delenv("TF_NUM_INTEROP_THREADS", raising=False)
    assert "environment" not in machine()
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    assert machine()["environment"] == {"TF_NUM_INTRAOP_THREADS": "1"}


def test_runs_at_once_share_the_cores_out_as_tensorflow_threads(monkeypatch):
    from benchmarks.model_ablation import child_threads

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert child_threads(1) == {}  # one run: TensorFlow's own choice
    assert child_threads(2) == {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    assert child_threads(4)["TF_NUM_INTRAOP_THREADS"] == "1"


def test_the_forests_spectral_indices_are_the_models():
    import numpy as np

    from benchmarks import region_holdout
    from model.architecture import SpectralIndices

    bands = ["b10", "b20", "b30", "b40"]
    manifest = {"bands": bands, "patch_size": 4, "classes": ["a", "b"]}
    settings = {"band_roles": "green=b20,red=b30,nir=b40"}
    indices = region_holdout.spectral_indices(manifest, settings)
    assert sorted(indices) == ["ndvi", "ndwi"]  # no swir1 named: no MNDWI, no NDBI
    values = np.array([[1, 2, 3, 5], [0, 0, 0, 0], [4, 3, 1, 1]], dtype=np.float32)
    features, labels = region_holdout.with_indices((values, np.array([0, 1, 0])), indices)
    expected = SpectralIndices(indices)(values[:, None, None, :]).numpy()[:, 0, 0, :]
    assert features.shape == (3, 6) and labels.tolist() == [0, 1, 0]
    np.testing.assert_allclose(features[:, :4], values)
    np.testing.assert_allclose(features[:, 4:], expected, rtol=1e-6)
