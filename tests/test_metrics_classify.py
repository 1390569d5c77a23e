"""Classifier accuracy: exact top-k bookkeeping, timm preprocessing, ImageNet class names."""

from __future__ import annotations

import pytest
import torch

from whichway.metrics import (
    DEFAULT_CLASSIFIER,
    ClassifierAccuracy,
    WeightsUnavailableError,
    imagenet_class_index,
    topk_correct,
)


@pytest.fixture(scope="module")
def tiny() -> ClassifierAccuracy:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return ClassifierAccuracy("resnet10t", pretrained=False, num_classes=10, batch_size=3)


def _images(n: int, seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_topk_correct_counts_exactly():
    logits = torch.tensor(
        [
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # ranking 6, 5, 4, 3, 2, 1, 0
            [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # ranking 0, 1, 2, 3, 4, 5, 6
            [0.0, 0.0, 9.0, 0.5, 0.0, 0.0, 0.0],  # ranking 2, 3, ...
        ]
    )
    targets = torch.tensor([6, 5, 3])
    assert topk_correct(logits, targets, ks=(1, 2, 5)) == {1: 1, 2: 2, 5: 2}
    # k larger than the number of classes counts every row
    assert topk_correct(logits[:, :3], torch.tensor([0, 1, 2]), ks=(5,)) == {5: 3}


def test_update_matches_manual_argmax_over_batches(tiny):
    images, labels = _images(7), torch.tensor([0, 1, 2, 3, 4, 5, 6])
    tiny.reset()
    tiny.update(images[:4], labels[:4])
    tiny.update(images[4:], labels[4:].tolist())
    logits = tiny.logits(images)
    assert logits.shape == (7, 10)
    top5 = logits.topk(5, dim=1).indices
    result = tiny.compute()
    assert result.n == 7
    assert result.correct_top1 == int((logits.argmax(1) == labels).sum())
    assert result.correct_top5 == int((top5 == labels[:, None]).any(1).sum())
    assert result.top1 == result.correct_top1 / 7
    tiny.reset()
    assert tiny.compute().n == 0


def test_known_predictions_through_a_fixed_head():
    model = ClassifierAccuracy("resnet10t", pretrained=False, num_classes=10)
    with torch.no_grad():
        model.model.fc.weight.zero_()
        model.model.fc.bias.copy_(torch.arange(10.0))  # every image: ranking 9, 8, 7, 6, 5, ...
    model.update(_images(4), [9, 5, 4, 0])
    result = model.compute()
    assert (result.correct_top1, result.correct_top5) == (1, 2)
    assert result.to_dict() == {"n": 4, "top1": 0.25, "top5": 0.5}


def test_preprocess_follows_the_model_data_config(tiny):
    _, h, w = tiny.data_config["input_size"]
    for size in ((300, 400), (64, 64), (400, 300)):
        x = torch.full((2, 3, *size), 0.25)
        out = tiny.preprocess(x)
        assert out.shape == (2, 3, h, w)
        mean = torch.tensor(tiny.data_config["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(tiny.data_config["std"]).view(1, 3, 1, 1)
        torch.testing.assert_close(out, ((0.25 - mean) / std).expand_as(out), atol=1e-5, rtol=0)


def test_preprocess_matches_timm_eval_transform(tiny):
    import timm.data
    from PIL import Image

    transform = timm.data.create_transform(**tiny.data_config)  # reference: PIL pipeline
    g = torch.Generator().manual_seed(1)
    smooth = torch.nn.functional.interpolate(
        torch.rand(1, 3, 12, 16, generator=g), size=(300, 400), mode="bilinear"
    )
    pixels = (smooth[0] * 255).round().to(torch.uint8)
    ref = transform(Image.fromarray(pixels.permute(1, 2, 0).numpy()))
    ours = tiny.preprocess((pixels.float() / 255)[None])[0]
    # PIL resamples uint8 (rounds to whole grey levels): agree within 2 levels / std
    assert (ours - ref).abs().max() < 2 / 255 / 0.224
    assert (ours - ref).abs().mean() < 0.5 / 255 / 0.224


def test_imagenet_class_names():
    idx = imagenet_class_index(
        ["tench", "goldfish, Carassius auratus", "n01440764", "Great_White_Shark"]
    )
    assert idx.tolist() == [0, 1, 0, 2]
    with pytest.raises(ValueError, match="several ImageNet classes"):
        imagenet_class_index(["crane"])
    with pytest.raises(ValueError, match="not an ImageNet-1k class name"):
        imagenet_class_index(["a photo of a dragon"])


def test_class_names_with_an_imagenet_classifier():
    model = ClassifierAccuracy("resnet10t", pretrained=False)  # 1000 classes, random weights
    images = _images(3)
    model.update(images, ["tench", "goldfish", "great white shark"])
    logits = model.logits(images)
    labels = torch.tensor([0, 1, 2])
    assert model.compute().correct_top1 == int((logits.argmax(1) == labels).sum())


def test_default_classifier_is_a_timm_maxvit():
    import timm

    assert "maxvit" in DEFAULT_CLASSIFIER and timm.is_model(DEFAULT_CLASSIFIER.split(".")[0])
    model = ClassifierAccuracy(DEFAULT_CLASSIFIER, pretrained=False)
    assert model.data_config["input_size"] == (3, 224, 224) and model.num_classes == 1000
    assert model.logits(_images(1, size=96)).shape == (1, 1000)


def test_offline_weights_error_says_what_and_how(monkeypatch):
    import timm

    class LocalEntryNotFoundError(FileNotFoundError):
        pass

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        ClassifierAccuracy(DEFAULT_CLASSIFIER)
    message = str(info.value)
    assert DEFAULT_CLASSIFIER in message and "HF_HOME" in message
    assert "checkpoint_path" in message and "pretrained=False" in message


def test_bad_inputs_raise_clear_errors(tiny):
    with pytest.raises(ValueError, match="unknown timm model"):
        ClassifierAccuracy("no_such_net", pretrained=False)
    with pytest.raises(ValueError, match="batch_size"):
        ClassifierAccuracy("resnet10t", pretrained=False, batch_size=0)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        tiny.update(_images(2) * 255, [0, 1])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tiny.update(_images(2)[:, 0], [0, 1])
    with pytest.raises(ValueError, match="one label per image"):
        tiny.update(_images(2), [0, 1, 2])
    with pytest.raises(ValueError, match="integer tensor"):
        tiny.update(_images(2), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="all integers or all ImageNet class names"):
        tiny.update(_images(2), [0, "tench"])
    with pytest.raises(ValueError, match="ImageNet-1k classifier"):
        tiny.update(_images(1), ["tench"])
    with pytest.raises(ValueError, match=r"lie in \[0, 10\)"):
        tiny.update(_images(1), [12])
