"""Model-based protocol metrics against independent implementations with identical weights:
LPIPS vs torchmetrics' LPIPS, structure distance vs transformers' ViT + a direct computation, CLIP vs
torchmetrics' CLIPScore on a tiny random CLIP converted to transformers. Plus weight loading."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from metrics import weights
from metrics.clip_score import (ClipEdited, ClipScorer, ClipSource, ClipWhole, TOY_MODEL_CFG, toy_clip_folder,
                                write_open_clip_folder)
from metrics.lpips_metric import BackgroundLPIPS, lin_weights_path, toy_trunk_file
from metrics.structure import (DinoViT, StructureDistance, TOY_VIT, load_dino, toy_dino_folder)
from metrics.weights import load_state_dict_file
from pie_bench.core.errors import ConfigError

from tests.test_metrics_helpers import edited_versions, make_batch, photo, pie_masks, random_image


@pytest.fixture(scope="module")
def photos():
    masks = pie_masks()
    srcs, eds, ms = [], [], []
    for k, name in enumerate(("astronaut", "chelsea")):
        img = photo(name)
        for ed in edited_versions(img, masks[k], seed=k)[1:3]:
            srcs.append(img), eds.append(ed), ms.append(masks[k])
    return make_batch(srcs, eds, ms, ["an astronaut", "a cat"][:1] * 2 + ["a cat"] * 2,
                      ["an astronaut in a red suit"] * 2 + ["a tiger lying down"] * 2)


# ---------------------------------------------------------------------------------------------
# LPIPS


def _torchmetrics_lpips(net: str, trunk_sd: dict):
    """torchmetrics' own LPIPS network, random trunk replaced by the same torchvision state dict."""
    import torchvision
    from torchmetrics.functional.image.lpips import _LPIPS

    arch = {"squeeze": "squeezenet1_1", "alex": "alexnet", "vgg": "vgg16"}[net]
    model = _LPIPS(pretrained=True, net=net, pnet_rand=True).eval()
    tv = getattr(torchvision.models, arch)(weights=None)
    tv.load_state_dict(trunk_sd)
    for sl in model.net.modules():
        if isinstance(sl, torch.nn.Sequential):
            for idx, mod in sl.named_children():
                mod.load_state_dict(tv.features[int(idx)].state_dict())
    return model


@pytest.mark.parametrize("net,cases", [("squeeze", [0, 2]), ("alex", [1])])
def test_lpips_matches_torchmetrics_with_identical_weights(photos, net, cases):
    """Full 512x512 (no toy downsizing): the protocol computation, on one photo per case to stay fast."""
    photos = dataclasses.replace(photos, source=photos.source[cases], edited=photos.edited[cases],
                                 mask=photos.mask[cases])
    metric = BackgroundLPIPS(net=net, resolution=None)
    metric.load("toy")
    trunk = load_state_dict_file(toy_trunk_file(net))
    ref_net = _torchmetrics_lpips(net, trunk)
    # the linear heads shipped by lpips and vendored by torchmetrics are the same numbers
    ours_lin = load_state_dict_file(lin_weights_path(net))
    for k, v in ours_lin.items():
        assert torch.equal(ref_net.state_dict()[k], v), k
    ours = metric.compute(photos)
    keep = photos.background
    for i in range(len(ours)):
        a = photos.source[i:i + 1] * keep[i:i + 1] * 2 - 1
        b = photos.edited[i:i + 1] * keep[i:i + 1] * 2 - 1
        with torch.no_grad():
            ref = ref_net(b, a).item()
        assert abs(float(ours[i]) - ref) <= 1e-5, (net, i, float(ours[i]), ref)
        assert ref > 1e-3  # a real difference was measured


def test_lpips_nan_on_full_mask_and_toy_resolution():
    img, ed = random_image(3), random_image(4)
    b = make_batch([img, img], [ed, img], [np.ones((512, 512), bool), pie_masks()[0]])
    m = BackgroundLPIPS()
    m.load("toy")
    v = m.compute(b)
    assert math.isnan(v[0]) and float(v[1]) == pytest.approx(0.0, abs=1e-7)
    assert m.describe()["resolution"] == 128 and m.describe()["toy"] and m.describe()["scale"] == 1e3
    with pytest.raises(ConfigError, match="net="):
        BackgroundLPIPS(net="resnet")


# ---------------------------------------------------------------------------------------------
# structure distance


def _independent_structure(src01: torch.Tensor, ed01: torch.Tensor, folder, quirk: bool = True) -> float:
    """transformers' ViTModel on the toy folder, keys hooked from the last layer, numpy self-similarity."""
    from torchvision import transforms
    from transformers import ViTModel

    vit = ViTModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
    grabbed = []
    last = vit.layers[-1] if hasattr(vit, "layers") else vit.encoder.layer[-1]  # transformers >= 5 / < 5
    key = last.attention.k_proj if hasattr(last.attention, "k_proj") else last.attention.attention.key
    key.register_forward_hook(lambda m, i, o: grabbed.append(o))
    tf = transforms.Compose([transforms.Resize(224, max_size=480, antialias=False),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    sims = []
    for img in (src01, ed01):
        x = tf(img * (255.0 if quirk else 1.0))
        with torch.no_grad():
            vit(pixel_values=x[None])
        k = grabbed.pop()[0].double().numpy()
        k = k / np.linalg.norm(k, axis=1, keepdims=True)
        sims.append(k @ k.T)
    return float(((sims[0] - sims[1]) ** 2).mean())


def test_structure_distance_matches_independent_computation(photos):
    metric = StructureDistance()
    metric.load("toy")
    ours = metric.compute(photos)
    folder = toy_dino_folder()
    for i in range(0, len(ours), 2):
        ref = _independent_structure(photos.source[i], photos.edited[i], folder)
        assert ref > 0
        assert float(ours[i]) == pytest.approx(ref, rel=1e-3, abs=1e-9), i
    # the 0-255 input quirk is really applied: 0-1 inputs give another number
    alt = _independent_structure(photos.source[0], photos.edited[0], folder, quirk=False)
    assert abs(alt - float(ours[0])) > 1e-3 * abs(alt)


def test_structure_distance_zero_for_identical_and_batch_independent(photos):
    metric = StructureDistance()
    metric.load("toy")
    same = make_batch([photo("coffee")], [photo("coffee")], [pie_masks()[0]])
    assert float(metric.compute(same)[0]) == pytest.approx(0.0, abs=1e-10)
    full = metric.compute(photos)
    one = metric.compute(make_batch([np.asarray(photos.source[1].permute(1, 2, 0).mul(255).round().byte())],
                                    [np.asarray(photos.edited[1].permute(1, 2, 0).mul(255).round().byte())],
                                    [photos.mask[1, 0].numpy()]))
    assert float(one[0]) == pytest.approx(float(full[1]), rel=1e-4)


def test_dino_checkpoint_formats_agree(tmp_path):
    """The toy transformers folder, the same weights re-saved by transformers (its current names) and
    as a DINO-style .pth all load to the same model."""
    from transformers import ViTModel

    from_folder = load_dino(toy_dino_folder())
    ViTModel.from_pretrained(str(toy_dino_folder()), add_pooling_layer=False).save_pretrained(tmp_path / "hf")
    from_hf = load_dino(tmp_path / "hf")
    path = tmp_path / "dino_toy.pth"
    torch.save(from_folder.state_dict(), path)
    from_pth = load_dino(path, default_config=TOY_VIT)
    x = torch.randn(1, 3, 224, 224)
    assert torch.allclose(from_folder.last_keys(x), from_pth.last_keys(x))
    assert torch.allclose(from_folder.last_keys(x), from_hf.last_keys(x))
    with pytest.raises(ConfigError, match="not a DINO ViT checkpoint"):
        load_dino(path)  # ViT-B/8 shape expected by default


def test_dino_position_interpolation_non_square():
    model = DinoViT(**TOY_VIT)
    keys = model.last_keys(torch.randn(1, 3, 224, 320))
    assert keys.shape == (1, 1 + 28 * 40, TOY_VIT["embed_dim"])


# ---------------------------------------------------------------------------------------------
# CLIP


def _open_clip_to_hf(folder):
    """Convert the toy open_clip checkpoint to a transformers CLIPModel (independent implementation)."""
    from transformers import CLIPConfig, CLIPModel

    sd = load_state_dict_file(folder / "open_clip_model.safetensors")
    v, t = TOY_MODEL_CFG["vision_cfg"], TOY_MODEL_CFG["text_cfg"]
    cfg = CLIPConfig(
        text_config=dict(vocab_size=t["vocab_size"], hidden_size=t["width"], intermediate_size=4 * t["width"],
                         num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
                         max_position_embeddings=t["context_length"], hidden_act="quick_gelu", layer_norm_eps=1e-5,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407),
        vision_config=dict(hidden_size=v["width"], intermediate_size=4 * v["width"], num_hidden_layers=v["layers"],
                           num_attention_heads=v["width"] // v["head_width"], image_size=v["image_size"],
                           patch_size=v["patch_size"], hidden_act="quick_gelu", layer_norm_eps=1e-5),
        projection_dim=TOY_MODEL_CFG["embed_dim"])
    out = {"text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
           "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
           "text_model.final_layer_norm.weight": sd["ln_final.weight"],
           "text_model.final_layer_norm.bias": sd["ln_final.bias"],
           "text_projection.weight": sd["text_projection"].T,
           "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
           "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
           "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
           "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"],
           "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
           "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
           "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
           "visual_projection.weight": sd["visual.proj"].T, "logit_scale": sd["logit_scale"]}
    for src, dst, n in (("transformer", "text_model", t["layers"]), ("visual.transformer", "vision_model", v["layers"])):
        for i in range(n):
            s, d = f"{src}.resblocks.{i}.", f"{dst}.encoder.layers.{i}."
            for part in ("weight", "bias"):
                q, k, vv = sd[s + f"attn.in_proj_{part}"].chunk(3)
                out[d + f"self_attn.q_proj.{part}"], out[d + f"self_attn.k_proj.{part}"] = q, k
                out[d + f"self_attn.v_proj.{part}"] = vv
                out[d + f"self_attn.out_proj.{part}"] = sd[s + f"attn.out_proj.{part}"]
                out[d + f"layer_norm1.{part}"] = sd[s + f"ln_1.{part}"]
                out[d + f"layer_norm2.{part}"] = sd[s + f"ln_2.{part}"]
                out[d + f"mlp.fc1.{part}"] = sd[s + f"mlp.c_fc.{part}"]
                out[d + f"mlp.fc2.{part}"] = sd[s + f"mlp.c_proj.{part}"]
    model = CLIPModel(cfg).eval()
    missing, unexpected = model.load_state_dict(out, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
    return model


class _FeaturesAsTensors(torch.nn.Module):
    """torchmetrics 1.9 expects ``get_*_features`` to return tensors; transformers >= 5 returns a
    ModelOutput whose ``pooler_output`` holds the projected features. Nothing else is changed."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def get_image_features(self, *args, **kwargs):
        out = self.model.get_image_features(*args, **kwargs)
        return getattr(out, "pooler_output", out)

    def get_text_features(self, *args, **kwargs):
        out = self.model.get_text_features(*args, **kwargs)
        return getattr(out, "pooler_output", out)


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    from transformers import CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from editors.backbone import write_clip_tokenizer_files

    tok_dir = write_clip_tokenizer_files(tmp_path_factory.mktemp("cliptok"))
    # the PIL processor: what transformers' CLIPImageProcessor was when the paper's numbers were made
    proc = CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=CLIPTokenizer.from_pretrained(str(tok_dir)))
    return _FeaturesAsTensors(_open_clip_to_hf(toy_clip_folder())), proc


def test_clip_matches_torchmetrics_clipscore(photos, hf_clip):
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    from torchmetrics.multimodal import CLIPScore

    model, proc = hf_clip
    metrics = {cls: cls() for cls in (ClipWhole, ClipEdited, ClipSource)}
    for m in metrics.values():
        m.load("toy")
    scorer = metrics[ClipWhole].scorer
    assert all(m.scorer is scorer for m in metrics.values())  # one model for the three metrics
    u8 = weights.to_uint8
    cases = {ClipWhole: (u8(photos.edited), photos.target_prompts),
             ClipEdited: (u8(photos.edited) * photos.mask.to(torch.uint8), photos.target_prompts),
             ClipSource: (u8(photos.source), photos.source_prompts)}
    tm = CLIPScore(model_name_or_path=lambda: (model, proc))
    raws = []
    for cls, (imgs, prompts) in cases.items():
        ours = metrics[cls].compute(photos)
        for i in range(len(prompts)):
            with torch.no_grad():
                raw, _ = _clip_score_update(imgs[i], [prompts[i]], model, proc)  # 100 * cos, before the max
            cos = scorer.cosine(imgs[i:i + 1], [prompts[i]])
            assert 100 * float(cos[0]) == pytest.approx(float(raw[0]), abs=2e-4), (cls.__name__, i)
            raws.append(float(raw[0]))
            tm.reset()
            ref = float(tm(imgs[i], prompts[i]))  # max(100 cos, 0) on one image, as the evaluator calls it
            assert float(ours[i]) == pytest.approx(ref, abs=2e-4), (cls.__name__, i)
            assert float(ours[i]) == pytest.approx(max(100 * float(cos[0]), 0.0), abs=1e-4)
    assert len({round(r, 3) for r in raws}) > len(raws) // 2  # the cases really differ


def test_clip_tokens_match_transformers_tokenizer(hf_clip):
    _, proc = hf_clip
    scorer = ClipScorer.from_folder(toy_clip_folder(), "cpu")
    for text in ("a slanted rusty mountain bicycle on the road in front of a building", "Cat, dog & bird!"):
        ours = scorer.tokenizer([text])[0]
        ids = proc.tokenizer(text)["input_ids"]
        assert ours[:len(ids)].tolist() == ids


def test_clip_edited_masks_outside_and_is_nan_for_empty_mask():
    """Edited-part CLIP must see black outside the mask: changing pixels outside does not move it,
    changing them inside does. An empty mask gives NaN."""
    img = photo("chelsea")
    mask = pie_masks()[0]
    out_changed = img.copy()
    out_changed[~mask] = 255 - out_changed[~mask]
    in_changed = img.copy()
    in_changed[mask] = 255 - in_changed[mask]
    b = make_batch([img] * 4, [img, out_changed, in_changed, img],
                   [mask, mask, mask, np.zeros((512, 512), bool)], tgt_prompts=["a cat"] * 4)
    m = ClipEdited()
    m.load("toy")
    cos = m.scorer.cosine(weights.to_uint8(b.edited) * b.mask.to(torch.uint8), ["a cat"] * 4)
    assert float(cos[0]) == pytest.approx(float(cos[1]), abs=1e-6)
    assert abs(float(cos[0]) - float(cos[2])) > 1e-4
    v = m.compute(b)
    assert math.isnan(v[3]) and not math.isnan(v[0])
    assert m.describe()["region"] == "edited" and m.describe()["label"] == "CLIP Edited"


def test_clip_shapes_backbone_loads_from_models_dir(tmp_path, monkeypatch):
    import open_clip

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    torch.manual_seed(1)
    folder = write_open_clip_folder(tmp_path / "clip", open_clip.model.CLIP(**cfg), cfg)
    monkeypatch.setenv("PIE_BENCH_SHAPES_MODELS", str(tmp_path))  # a folder of trained ShapesEdit models
    weights.clear_models()
    m = ClipWhole()
    m.load("shapes")
    assert m.scorer.folder == folder and m.scorer.model.visual.image_size == (64, 64)
    v = m.compute(make_batch([random_image(0)], [random_image(1)], [pie_masks()[0]]))
    assert v.shape == (1,) and 0 <= float(v[0]) <= 100
    assert not m.is_toy
    for other in (StructureDistance(), BackgroundLPIPS()):  # no ShapesEdit DINO/LPIPS: toy, labelled so
        other.load("shapes")
        assert other.is_toy and other.describe()["toy"]
    monkeypatch.setenv("PIE_BENCH_SHAPES_MODELS", str(tmp_path / "nothing"))
    weights.clear_models()
    with pytest.raises(ConfigError, match="no ShapesEdit CLIP"):
        ClipWhole().load("shapes")
    weights.clear_models()


# ---------------------------------------------------------------------------------------------
# real weights: offline, a clear error naming the weight and how to get it


def test_real_weights_missing_offline_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("PIE_BENCH_DINO", "PIE_BENCH_CLIP", "PIE_BENCH_LPIPS_TRUNK"):
        monkeypatch.delenv(var, raising=False)
    weights.clear_models()
    with pytest.raises(ConfigError, match=r"dino_vitb8_pretrain\.pth.*PIE_BENCH_DINO"):
        StructureDistance().load("real")
    with pytest.raises(ConfigError, match=r"squeezenet1_1-b8a52dc0\.pth.*PIE_BENCH_LPIPS_TRUNK"):
        BackgroundLPIPS().load("real")
    with pytest.raises(ConfigError, match=r"vit_large_patch14_clip_224\.openai.*huggingface-cli download"):
        ClipWhole().load("real")
    with pytest.raises(ConfigError, match="unknown --metrics-backbone"):
        ClipWhole().load("sd15")
    monkeypatch.setenv("PIE_BENCH_LPIPS_TRUNK", str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="missing.pth"):
        BackgroundLPIPS().load("real")


def test_real_paths_load_through_env_overrides(tmp_path, monkeypatch):
    """``real`` resolves env overrides to the same loaders (toy-sized files stand in for the real ones)."""
    monkeypatch.setenv("PIE_BENCH_LPIPS_TRUNK", str(toy_trunk_file("squeeze")))
    monkeypatch.setenv("PIE_BENCH_CLIP", str(toy_clip_folder()))
    weights.clear_models()
    lp = BackgroundLPIPS()
    lp.load("real")
    assert lp.resolution is None and not lp.is_toy
    clip = ClipWhole()
    clip.load("real")
    assert clip.scorer.folder == toy_clip_folder()
    weights.clear_models()


def test_clip_score_clamps_negative_cosines_at_zero(monkeypatch):
    scorer = ClipScorer.from_folder(toy_clip_folder(), "cpu")
    monkeypatch.setattr(scorer, "cosine", lambda images, prompts: torch.tensor([-0.2, 0.0, 0.305]))
    assert scorer.score(None, None).tolist() == pytest.approx([0.0, 0.0, 30.5])


def test_trained_shapes_clip_prefers_matching_captions():
    """With ShapesEdit's trained CLIP present (skipped otherwise): own caption beats a shuffled one."""
    shapes = pytest.importorskip("pie_bench.datasets.shapes")
    try:
        shapes.models_dir("clip")
    except ConfigError as exc:
        pytest.skip(str(exc))
    from pie_bench.datasets.shapes.dataset import upsample
    from pie_bench.datasets.shapes.scenes import random_scene, render

    rng = np.random.default_rng(0)
    scenes = [random_scene(rng) for _ in range(12)]
    images = [upsample(render(s)) for s in scenes]
    captions = [s.caption() for s in scenes]
    m = ClipWhole()
    m.load("shapes")
    own = m.compute(make_batch(images, images, [pie_masks()[0]] * 12, tgt_prompts=captions))
    other = m.compute(make_batch(images, images, [pie_masks()[0]] * 12, tgt_prompts=captions[1:] + captions[:1]))
    assert float((own > other).float().mean()) >= 0.75
    weights.clear_models()


def test_clip_source_is_scored_once_per_source_image(photos, monkeypatch):
    """CLIP Source does not depend on the edit: a second editor's batch with the same sources is looked up
    (same values, no model call); a changed source image, or the same image with another prompt, is scored."""
    from dataclasses import replace

    m = ClipSource()
    m.load("toy")
    calls = []
    score = m.scorer.score
    monkeypatch.setattr(m.scorer, "score", lambda imgs, prompts: calls.append(len(prompts)) or score(imgs, prompts))
    first = m.compute(photos)
    n = len(photos.source_prompts)
    assert calls == [n]
    again = m.compute(replace(photos, edited=photos.edited.flip(-1)))
    assert calls == [n] and torch.equal(first, again)
    changed = photos.source.clone()
    changed[0] = 1 - changed[0]
    other = m.compute(replace(photos, source=changed, source_prompts=["a red cube"] + list(photos.source_prompts[1:])))
    assert calls == [n, 1] and torch.equal(other[1:], first[1:])
    fresh = ClipSource()
    fresh.load("toy")
    assert float(other[0]) == pytest.approx(float(fresh.compute(replace(photos, source=changed[:1], edited=photos.edited[:1],
                                                                       mask=photos.mask[:1], source_prompts=["a red cube"],
                                                                       target_prompts=photos.target_prompts[:1]))[0]), abs=1e-5)
