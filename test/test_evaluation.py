"""Training curves and history files (fer_ros/evaluation.py)."""

from fer_ros.evaluation import curve_series, plot_curves, read_history_csv


def test_single_head_curves_are_train_and_validation():
    history = {"loss": [1.0, 0.8], "val_loss": [1.1, 0.9],
               "accuracy": [0.5, 0.6], "val_accuracy": [0.4, 0.55]}
    assert curve_series(history, "accuracy") == [
        ("train accuracy", [0.5, 0.6]), ("validation accuracy", [0.4, 0.55])]
    assert [label for label, _ in curve_series(history, "loss")] == [
        "train loss", "validation loss"]


def test_multitask_curves_have_one_accuracy_per_head_and_the_overall_loss():
    history = {"loss": [2.0], "val_loss": [2.1],
               "emotion_3class_loss": [0.5], "val_emotion_3class_loss": [0.6],
               "emotion_3class_accuracy": [0.7], "val_emotion_3class_accuracy": [0.65],
               "emotion_7class_accuracy": [0.5], "val_emotion_7class_accuracy": [0.45]}
    assert [label for label, _ in curve_series(history, "accuracy")] == [
        "train emotion_3class accuracy", "validation emotion_3class accuracy",
        "train emotion_7class accuracy", "validation emotion_7class accuracy"]
    assert [label for label, _ in curve_series(history, "loss")] == [
        "train loss", "validation loss"]


def test_curves_plot_from_a_keras_csv_log(tmp_path):
    log = tmp_path / "training_log.csv"
    log.write_text("epoch,emotion_3class_accuracy,loss,val_emotion_3class_accuracy,val_loss\n"
                   "0,0.5,1.2,0.45,1.3\n1,0.6,1.0,0.55,1.1\n")
    history = read_history_csv(log)
    assert history["val_emotion_3class_accuracy"] == [0.45, 0.55]
    plot_curves(history, tmp_path / "curves.png", "mt")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert read_history_csv(tmp_path / "missing.csv") == {}
