"""Tiny random checkpoints, written from configs, for tests, CPU benches and `onegen demo`.

Each `tiny_<family>(folder, seed=0)` writes a randomly initialised (seeded, so reruns give the same
weights) checkpoint under `folder` in the layout the real weights have, and returns what the
annotator's config field takes (a model folder, or a .pt / .pth file). The annotators load them through
the same `resolve_checkpoint` + loader code real hub ids use, so everything but the weights is real:
the outputs are noise-driven pictures, the plumbing is not. Nothing here touches the network.

`demo_annotator_settings(folder)` builds the ones `onegen demo` needs and returns the
`onegen annotate --annotators ... --set ...` arguments that run them on CPU.
torch / transformers / ultralytics / segment_anything / controlnet_aux / diffusers are imported lazily.
"""

from __future__ import annotations

from pathlib import Path

# class names the tiny OWLv2 / Grounding DINO tokenizers know; other words map to [UNK]
DETECTOR_WORDS = ("cat", "dog", "person", "rocket", "astronaut", "coffee", "cup", "face", "flag", "hair")
DEMO_VOCABULARY = ("person", "cat", "cup", "rocket")
VLM_CORPUS = [
    "a photo of a dog on the grass with a red ball",
    "the image shows a cat, a person and a car near a tree",
    "describe this image in detail. list the main objects, one per line",
    "1. dog\n2. cat\n3. tree",
] * 4
LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} [/INST]"
    "{% else %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
)
MOLMO_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|image|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MOLMO_TOKENS = [
    "<|image|>", "<|video|>", "<im_patch>", "<im_col>", "<im_start>", "<low_res_im_start>",
    "<frame_start>", "<im_end>", "<frame_end>", "<im_low>", "<|im_start|>", "<|im_end|>",
]  # fmt: skip
VLM_INIT_RANGE = 0.2  # larger than the default 0.02 so the random image features visibly steer the text
T5_CORPUS_WORDS = ("a photo of the cat dog person face city tree car red blue green small large image "
                   "text2image canny2image deblurring image_inpainting super_resolution depth2image hed2img "
                   "pose2image semanticmap2image boundingbox2image multiview faceid img0 img1 img2 mask")
DEPTH_INPUT = 70  # Depth Anything processor target (a multiple of 14), small so CPU runs stay fast
VITPOSE_CROP = (64, 48)  # ViTPose input (height, width)


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


# --- depth, pose, hed --------------------------------------------------------------------------------


def tiny_depth(folder: str | Path, seed: int = 0, constant_head: bool = False) -> str:
    """Depth Anything (4-layer DINOv2, 32 wide) + DPT processor at 70 px; returns the model dir.

    constant_head: zero the last conv and set its bias, so the model predicts one depth everywhere
    (exercises the annotator's degenerate-depth path).
    """
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    _seed(seed)
    backbone = Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, image_size=DEPTH_INPUT,
        patch_size=14, out_indices=[1, 2, 3, 4], reshape_hidden_states=False,
    )  # fmt: skip
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16, head_hidden_size=8,
    )  # fmt: skip
    model = DepthAnythingForDepthEstimation(config).eval()
    if constant_head:
        with torch.no_grad():
            model.head.conv3.weight.zero_()
            model.head.conv3.bias.fill_(0.5)
    model.save_pretrained(str(folder))
    DPTImageProcessor(
        size={"height": DEPTH_INPUT, "width": DEPTH_INPUT}, ensure_multiple_of=14, keep_aspect_ratio=True,
        resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(str(folder))  # fmt: skip
    return str(folder)


def tiny_vitpose(folder: str | Path, seed: int = 0) -> str:
    """ViTPose (2-layer ViT, 17 COCO keypoints, 64x48 crops) + processor; returns the model dir."""
    from transformers import (
        VitPoseBackboneConfig,
        VitPoseConfig,
        VitPoseForPoseEstimation,
        VitPoseImageProcessor,
    )

    _seed(seed)
    backbone = VitPoseBackboneConfig(
        image_size=list(VITPOSE_CROP), patch_size=[8, 8], hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, mlp_ratio=2, out_indices=[2],
    )  # fmt: skip
    model = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17)).eval()
    model.save_pretrained(str(folder))
    VitPoseImageProcessor(size={"height": VITPOSE_CROP[0], "width": VITPOSE_CROP[1]}).save_pretrained(str(folder))
    return str(folder)


def tiny_yolo(folder: str | Path, seed: int = 0) -> str:
    """A random-init YOLOv8n (ultralytics' bundled yolov8n.yaml) saved like real weights; returns the .pt.

    Offline: the yaml ships inside ultralytics, and YOLO_OFFLINE stops its online checks.
    """
    from onegen.core.weights import import_yolo

    YOLO = import_yolo()  # offline, no auto-install, Pillow left unpatched

    Path(folder).mkdir(parents=True, exist_ok=True)
    _seed(seed)
    path = str(Path(folder) / "yolo_random.pt")
    YOLO("yolov8n.yaml").save(path)
    return path


def tiny_hed(folder: str | Path, seed: int = 0) -> str:
    """A random ControlNetHED network as `ControlNetHED.pth` (lllyasviel/Annotators layout); returns the dir.

    The network's input `norm` (a per-channel offset, zero at init) is set to photo-like means, as in
    the real weights, so edges respond to image content rather than to the offset.
    """
    import torch
    from controlnet_aux.hed import ControlNetHED_Apache2

    Path(folder).mkdir(parents=True, exist_ok=True)
    _seed(seed)
    net = ControlNetHED_Apache2()
    with torch.no_grad():
        net.norm.copy_(torch.tensor([120.0, 110.0, 100.0]).view(1, 3, 1, 1))
    torch.save(net.state_dict(), Path(folder) / "ControlNetHED.pth")
    return str(folder)


# --- segment: OWLv2, Grounding DINO, SAM ----------------------------------------------------------------


def tiny_owlv2(folder: str | Path, seed: int = 0, words: tuple[str, ...] = DETECTOR_WORDS,
               prior_boxes: bool = True) -> str:
    """OWLv2 (1-layer text + vision towers, 64 px) + a word-level tokenizer over `words`; returns the dir.

    prior_boxes: zero the box head's last layer so every query keeps its grid prior box (random box
    heads saturate the sigmoid and give degenerate boxes).
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
        PreTrainedTokenizerFast,
    )

    # OWLv2 masks a text query whose first id is 0 and pools the highest id: BOS != 0, EOS last
    vocab = {"[PAD]": 0, "[UNK]": 1, "<bos>": 2, **{w: 3 + i for i, w in enumerate(words)}}
    vocab["<eos>"] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", vocab["<eos>"])]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="[PAD]", unk_token="[UNK]", model_max_length=8)
    config = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8, pad_token_id=0, bos_token_id=2,
                         eos_token_id=vocab["<eos>"]),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32,
    )  # fmt: skip
    _seed(seed)
    model = Owlv2ForObjectDetection(config)
    if prior_boxes:
        with torch.no_grad():
            model.box_head.dense2.weight.zero_()
            model.box_head.dense2.bias.zero_()
    model.save_pretrained(str(folder))
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}),
                   tokenizer=tokenizer).save_pretrained(str(folder))
    return str(folder)


def tiny_grounding_dino(folder: str | Path, seed: int = 0, words: tuple[str, ...] = DETECTOR_WORDS) -> str:
    """Grounding DINO (2-stage Swin, 1-layer BERT, 12 queries, 64-96 px) + word-level tokenizer; returns the dir."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        PreTrainedTokenizerFast,
        SwinConfig,
    )

    specials = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    vocab = {**specials, **{w: 5 + i for i, w in enumerate([*words, "."])}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # splits "cat." into "cat" "." with offsets
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                        unk_token="[UNK]", mask_token="[MASK]", model_max_length=256)
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1],
                                   window_size=4, out_features=["stage1", "stage2"]),
        text_config=BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64),
        num_queries=12, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, d_model=32, num_feature_levels=2,
        encoder_n_points=2, decoder_n_points=2, disable_custom_kernels=True,
    )  # d_model: GroupNorm(32, d_model); decoder_layers >= 2: tied box heads
    _seed(seed)
    GroundingDinoForObjectDetection(config).save_pretrained(str(folder))
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
                           tokenizer=tokenizer).save_pretrained(str(folder))
    return str(folder)


def tiny_sam(folder: str | Path, seed: int = 0) -> str:
    """A random SAM of `SAM_ARCHS["tiny"]` (64 px) as a state-dict file; returns the .pth (sam_model_type="tiny")."""
    import torch

    from onegen.annotators.sam import SAM_ARCHS, build_sam

    Path(folder).mkdir(parents=True, exist_ok=True)
    _seed(seed)
    path = Path(folder) / "sam_tiny.pth"
    torch.save(build_sam(SAM_ARCHS["tiny"]).state_dict(), path)
    return str(path)


# --- vision-language models -----------------------------------------------------------------------------


def vlm_tokenizer(special_tokens: list[str], chat_template: str):
    """A byte-level BPE tokenizer (300 tokens) trained in memory, with `special_tokens` and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>", *special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tokenizer.train_from_iterator(VLM_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", chat_template=chat_template)


def tiny_llava_next(folder: str | Path, seed: int = 0) -> str:
    """LLaVA-NeXT (2-layer Mistral + 2-layer CLIP, 28 px tiles, up to 2x2) + processor; returns the dir."""
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        MistralConfig,
    )

    tokenizer = vlm_tokenizer(["<image>"], LLAVA_TEMPLATE)
    pinpoints = [[28, 28], [28, 56], [56, 28], [56, 56]]
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=28, patch_size=14, projection_dim=16, initializer_range=VLM_INIT_RANGE,
    )  # fmt: skip
    text = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=VLM_INIT_RANGE, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    config = LlavaNextConfig(
        vision_config=vision, text_config=text, image_grid_pinpoints=pinpoints, image_seq_length=4,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    _seed(seed)
    LlavaNextForConditionalGeneration(config).save_pretrained(str(folder))
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}, image_grid_pinpoints=pinpoints
    )
    # CLIP prepends a CLS token: the processor must count it (num_additional_image_tokens=1)
    LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE,
    ).save_pretrained(str(folder))  # fmt: skip
    return str(folder)


def tiny_molmo2(folder: str | Path, seed: int = 0) -> str:
    """Native Molmo2 (2-layer text + 2-layer ViT, 28 px crops, up to 4 crops) + processor; returns the dir."""
    from transformers import (
        Molmo2Config,
        Molmo2ForConditionalGeneration,
        Molmo2ImageProcessor,
        Molmo2Processor,
        Molmo2VideoProcessor,
    )

    tokenizer = vlm_tokenizer(MOLMO_TOKENS, MOLMO_TEMPLATE)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in MOLMO_TOKENS}
    heads = {"num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8, "initializer_range": VLM_INIT_RANGE}
    config = Molmo2Config(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, image_size=[28, 28],
                           patch_size=14, **heads),
        adapter_config=dict(vision_feature_layer=[-1, 0], hidden_size=16, intermediate_size=32,
                            text_hidden_size=32, **heads),
        text_config=dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         vocab_size=len(tokenizer), additional_vocab_size=0, num_hidden_layers=2,
                         intermediate_size=64, max_position_embeddings=512, initializer_range=VLM_INIT_RANGE,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        image_start_token_id=ids["<im_start>"], low_res_image_start_token_id=ids["<low_res_im_start>"],
        image_end_token_id=ids["<im_end>"], image_patch_id=ids["<im_patch>"],
        frame_start_token_id=ids["<frame_start>"], frame_end_token_id=ids["<frame_end>"],
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, initializer_range=VLM_INIT_RANGE,
    )  # fmt: skip
    _seed(seed)
    Molmo2ForConditionalGeneration(config).save_pretrained(str(folder))
    crops = {"size": {"height": 28, "width": 28}, "patch_size": 14, "pooling_size": [2, 2]}
    Molmo2Processor(
        image_processor=Molmo2ImageProcessor(**crops, overlap_margins=[0, 0], max_crops=4),
        video_processor=Molmo2VideoProcessor(**crops), tokenizer=tokenizer, chat_template=MOLMO_TEMPLATE,
    ).save_pretrained(str(folder))  # fmt: skip
    return str(folder)


# --- faces: a YOLOS face detector and a ViT NSFW classifier -------------------------------------------


def tiny_face_detector(folder: str | Path, seed: int = 0, spread_slots: bool = True) -> str:
    """YOLOS (2-layer, 64 px, 3 detection tokens, one label "face") + processor; returns the dir.

    spread_slots: re-draw the detection tokens (std 1) and the class / box heads (std 0.5). The default
    init makes every detection token identical, so all detections would coincide.
    """
    import torch
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    _seed(seed)
    yolos = YolosForObjectDetection(YolosConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=[64, 64],
        patch_size=16, num_detection_tokens=3, id2label={0: "face"}, label2id={"face": 0},
    ))  # fmt: skip
    if spread_slots:
        with torch.no_grad():
            yolos.vit.embeddings.detection_tokens.normal_(std=1.0)
            for param in [*yolos.class_labels_classifier.parameters(), *yolos.bbox_predictor.parameters()]:
                param.normal_(std=0.5)
    yolos.save_pretrained(str(folder))
    YolosImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}).save_pretrained(str(folder))
    return str(folder)


def tiny_nsfw(folder: str | Path, seed: int = 0) -> str:
    """ViT image classifier (1 layer, 32 px) with labels normal / nsfw + processor; returns the dir."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    _seed(seed)
    ViTForImageClassification(ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, image_size=32,
        patch_size=8, id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1},
    )).save_pretrained(str(folder))  # fmt: skip
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return str(folder)


# --- training: T5 text encoder, VAE -----------------------------------------------------------------------


def tiny_text_encoder(folder: str | Path, width: int = 32, seed: int = 0) -> str:
    """A 1-layer T5 encoder (d_model = `width`) + a word-level tokenizer trained in memory; returns the dir."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"])
    tokenizer.train_from_iterator([T5_CORPUS_WORDS, "[[ ]] < > # :"], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=300)
    config = T5Config(vocab_size=tokenizer.get_vocab_size(), d_model=width, d_kv=8, d_ff=2 * width, num_layers=1,
                      num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    _seed(seed)
    T5EncoderModel(config).save_pretrained(str(folder))
    fast.save_pretrained(str(folder))
    return str(folder)


def tiny_vae(folder: str | Path, seed: int = 0) -> str:
    """A random AutoencoderKL: 16 latent channels, 8x downsampling (4 blocks, 3 downsamples); returns the dir."""
    from diffusers import AutoencoderKL

    _seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(4, 8, 8, 8), scaling_factor=0.5, shift_factor=0.1)
    vae.save_pretrained(str(folder))
    return str(folder)


# --- the demo's annotate step ------------------------------------------------------------------------------


def demo_annotator_settings(folder: str | Path) -> tuple[list[str], list[str]]:
    """Build the demo's tiny checkpoints under `folder`; return (annotator names, `--set` options).

    For `onegen annotate ROOT --annotators ",".join(names) --set opt ...`: depth, pose, hed, segment
    (tiny OWLv2 + tiny SAM over `DEMO_VOCABULARY`), caption and entities (tiny LLaVA-NeXT, 16 new
    tokens), all on CPU (num_gpus=0) with batches of 4. Segment runs before entities on purpose: it
    then names classes from the vocabulary (words its tiny tokenizer knows), not from random VLM text.
    Thresholds are 0 so the random detectors still return boxes (pose persons, segment classes): the
    outputs are noise, the pipeline around them is real.
    """
    root = Path(folder)
    vlm = tiny_llava_next(root / "llava_next")
    names = ["depth", "pose", "hed", "segment", "caption", "entities"]
    settings = [
        f"depth.model={tiny_depth(root / 'depth')}", "depth.batch_size=4",
        f"pose.detector={tiny_yolo(root / 'yolo')}", f"pose.model={tiny_vitpose(root / 'vitpose')}",
        "pose.imgsz=160", "pose.box_threshold=0.0", "pose.keypoint_threshold=0.0", "pose.max_persons=2",
        "pose.batch_size=4",
        f"hed.model={tiny_hed(root / 'hed')}", "hed.detect_resolution=128", "hed.batch_size=4",
        f"caption.model={vlm}", "caption.max_new_tokens=16", "caption.batch_size=4",
        f"entities.model={vlm}", "entities.max_new_tokens=16", "entities.batch_size=4",
        "segment.detector=owlv2", f"segment.detector_id={tiny_owlv2(root / 'owlv2')}",
        "segment.sam_model_type=tiny", f"segment.sam_checkpoint={tiny_sam(root / 'sam')}",
        f"segment.vocabulary={','.join(DEMO_VOCABULARY)}", "segment.box_threshold=0.0", "segment.batch_size=4",
    ]  # fmt: skip
    return names, settings + [f"{name}.num_gpus=0" for name in names]
