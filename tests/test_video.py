"""Video input (decoding, frame sampling, each family's video path) and zero-shot text-video retrieval."""

import json
import os
import subprocess
import sys

import av  # in the test extra: a broken install fails this module instead of skipping it
import numpy as np
import pytest
import torch
from PIL import Image

from llave_hf.collator import ContrastiveCollator
from llave_hf.evaluation.video import (
    VideoRetrievalData,
    VideoRetrievalEvaluator,
    load_msrvtt,
    load_msvd,
    text_to_video_ranks,
    video_retrieval_metrics,
    video_to_text_ranks,
)
from llave_hf.grad_cache import slice_rows
from llave_hf.modeling.processing_llave import Video, decode_video, load_video, sample_frame_indices
from llave_hf.testing import tiny_model_and_processor


VIDEO_FAMILIES = ["llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


def write_video(path, num_frames, width=48, height=40, fps=30, codec="libx264"):
    """A video whose frame i is flat gray at level 5 * i (decodable back to its index), and its path."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(num_frames):
            pixels = np.full((height, width, 3), 5 * index % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def frame_levels(video: Video) -> list[int]:
    return [round(float(np.asarray(frame.convert("L")).mean()) / 5) for frame in video.frames]


# ---------------------------------------------------------------------------------------------------------------------
# sampling and decoding


def test_frame_sampling_matches_hand_computed_indices():
    # 30 fps at 3 fps: every 10th frame, from frame 0
    assert sample_frame_indices(45, 30.0) == [0, 10, 20, 30, 40]
    assert sample_frame_indices(310, 30.0) == list(range(0, 310, 10))  # 31 frames: under the cap of 32
    # 25 fps: round(25 / 3) = 8
    assert sample_frame_indices(20, 25.0) == [0, 8, 16]
    # over the cap: max_frames spread uniformly over the whole video, first and last included (rounded down)
    assert sample_frame_indices(10, 3.0, max_frames=4) == [0, 3, 6, 9]
    assert sample_frame_indices(11, 3.0, max_frames=4) == [0, 3, 6, 10]
    assert sample_frame_indices(400, 30.0) == np.linspace(0, 399, 32, dtype=int).tolist()
    assert sample_frame_indices(1, 30.0) == [0]
    assert sample_frame_indices(0, 30.0) == []


@pytest.mark.parametrize("codec, suffix", [("libx264", "mp4"), ("libvpx-vp9", "webm")])
def test_decoding_samples_the_right_frames(tmp_path, codec, suffix):
    path = write_video(tmp_path / f"clip.{suffix}", 45, codec=codec)
    video = decode_video(path, "clip")
    assert frame_levels(video) == [0, 10, 20, 30, 40]
    assert video.timestamps == pytest.approx([0, 1 / 3, 2 / 3, 1, 4 / 3])
    assert video.frames[0].size == (48, 40) and video.frames[0].mode == "RGB"
    capped = decode_video(path, "clip", max_frames=4)
    assert frame_levels(capped) == [0, 14, 29, 44]  # linspace(0, 44, 4) rounded down


def test_bad_videos_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"item 3: video file not found: .*missing\.mp4"):
        load_video(str(tmp_path / "missing.mp4"), "item 3")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match=r"item 1: cannot decode video file .*corrupt\.mp4"):
        load_video(str(corrupt), "item 1")
    sound = str(tmp_path / "sound.wav")  # a media file without a video stream
    with av.open(sound, "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(ValueError, match=r"item 2: .*sound\.wav' has no video stream"):
        load_video(sound, "item 2")
    with pytest.raises(ValueError, match="item 4: the video has no frames"):
        load_video([], "item 4")
    with pytest.raises(ValueError, match=r"item 5: the video's frames differ in size \(10x10, 12x10\)"):
        load_video([Image.new("RGB", (10, 10)), Image.new("RGB", (12, 10))], "item 5")


def test_without_pyav_files_get_a_clear_error_and_frames_still_work(tmp_path, monkeypatch, make_image):
    model, _ = tiny_model_and_processor("llava_onevision")
    path = write_video(tmp_path / "clip.mp4", 5)
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails, as where PyAV is not installed
    with pytest.raises(ImportError, match=r"Decoding video files needs PyAV: `pip install av`"):
        model.encode(videos=[path])
    assert model.encode(texts=["a"], videos=[[make_image()] * 2]).shape == (1, 64)


def test_video_over_the_token_limit_loses_frames_then_is_refused(tmp_path, caplog):
    _, processor = tiny_model_and_processor("llava_onevision")  # 4x4 patches pooled to 2x2: 4 tokens per frame
    frames = [Image.new("RGB", (32, 32), (5 * i, 0, 0)) for i in range(10)]
    template_and_video = processor.prompt_template.replace("{text}", processor._video_tokens(Video(frames)))
    full = len(processor.tokenizer(template_and_video)["input_ids"])
    processor.video_max_length = full - 2 * 4 + 1  # room for 8 frames and one token of text, not 9 frames
    fitted = processor.fit_video(Video(frames), "clip 7")
    assert [frame.getpixel((0, 0))[0] // 5 for frame in fitted.frames] == np.linspace(0, 9, 8, dtype=int).tolist()
    assert processor(text=["x"], videos=[frames])["video_num_frames"].tolist() == [8]
    processor.video_max_length = full - 9 * 4  # one frame leaves no room for text
    with pytest.raises(ValueError, match=rf"clip 7: even one frame of the video takes {full - 36} tokens .* over video_max_length={full - 36}"):
        processor(text=["x"], videos=[frames], item_names=["clip 7"])


# ---------------------------------------------------------------------------------------------------------------------
# each family's video path


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_video_tokens_match_the_backbones_features(family, tmp_path, make_image):
    """The backbone raises when video tokens and video features differ in number: videos of odd and even lengths and
    different sizes, beside an image, must go through."""
    model, processor = tiny_model_and_processor(family)
    videos = [
        write_video(tmp_path / "a.mp4", 21, width=48, height=40),  # 3 frames
        None,
        [Image.new("RGB", (64, 36), (i * 40, 0, 0)) for i in range(4)],
        write_video(tmp_path / "b.webm", 1, width=30, height=50, codec="libvpx-vp9"),
    ]
    images = [None, make_image(), None, None]
    inputs = processor(text=["a", "b", None, "d"], images=images, videos=videos)
    video_rows = (inputs["input_ids"] == processor.video_token_id).sum(dim=1)
    assert video_rows[1] == 0 and (video_rows[[0, 2, 3]] > 0).all()
    if "video_num_frames" in inputs:
        assert inputs["video_num_frames"].tolist() == [3, 4, 1]
    else:  # frames in temporal pairs, the last repeated: 3 -> 2 steps, 4 -> 2, 1 -> 1
        assert inputs["video_grid_thw"][:, 0].tolist() == [2, 2, 1]
    with torch.no_grad():
        embeddings = model(**inputs).embeddings
    assert embeddings.shape == (4, 64) and torch.isfinite(embeddings).all()


def test_llava_onevision_frames_are_the_images_base_view_and_go_through_the_backbones_video_path(make_image):
    model, processor = tiny_model_and_processor("llava_onevision")
    frame = make_image(30, 45)
    image_inputs = processor(images=[frame])
    video_inputs = processor(videos=[[frame] * 3])
    # LLaVA-OneVision resizes each frame to one tile: the base view of the image's anyres tiles
    for pixels in video_inputs["pixel_values_videos"]:
        torch.testing.assert_close(pixels, image_inputs["pixel_values"][0, 0])
    assert (video_inputs["input_ids"] == processor.video_token_id).sum() == 3 * 2**2 + 1  # 4x4 patches pooled to 2x2, then a newline
    # our per-length grouping gives what the backbone's own video input (one (videos, frames, ...) tensor) gives
    with torch.no_grad():
        ours = model(**video_inputs).embeddings
        native = model.backbone(
            input_ids=video_inputs["input_ids"],
            attention_mask=video_inputs["attention_mask"],
            pixel_values_videos=video_inputs["pixel_values_videos"][None],
        ).last_hidden_state[:, -1]
    torch.testing.assert_close(ours, torch.nn.functional.normalize(native, dim=-1))


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_video_of_two_identical_frames_is_the_image(family, make_image):
    """Qwen2-VL makes an image one temporal patch of two copies of it: a video of two identical frames is that
    image, with video tokens in place of image tokens."""
    model, processor = tiny_model_and_processor(family)
    frame = make_image(28, 40)
    image = model.encode(texts=["a caption"], images=[frame])
    video = model.encode(texts=["a caption"], videos=[[frame, frame]])
    torch.testing.assert_close(video, image, rtol=0, atol=1e-5)
    other = model.encode(texts=["a caption"], videos=[[frame, make_image(28, 40, seed=1)]])
    assert not torch.allclose(other, image, atol=1e-3)


def test_qwen_video_patches_match_the_video_processors_layout(make_image):
    """Frames through the image processor, paired into temporal patches, equal transformers' video patchify (written
    out here: its class needs torchvision): frames grouped by `temporal_patch_size`, the last one repeated."""
    _, processor = tiny_model_and_processor("qwen2_vl")
    image_processor = processor.image_processor
    frames = [make_image(16, 24, seed=seed) for seed in range(3)]  # 16x24 px: a multiple of 8, not resized
    inputs = processor(videos=[frames])
    mean, std = np.array(image_processor.image_mean), np.array(image_processor.image_std)
    video = np.stack([(np.asarray(frame) / 255.0 - mean) / std for frame in frames]).transpose(0, 3, 1, 2)
    video = np.concatenate([video, video[-1:]])  # 3 frames -> 4: the last repeated
    patch, merge, temporal = 4, 2, 2
    grid_t, grid_h, grid_w = 2, 16 // patch, 24 // patch
    patches = video.reshape(grid_t, temporal, 3, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(grid_t * grid_h * grid_w, -1)
    assert inputs["video_grid_thw"].tolist() == [[grid_t, grid_h, grid_w]]
    torch.testing.assert_close(inputs["pixel_values_videos"], torch.tensor(patches, dtype=torch.float32), rtol=0, atol=1e-5)


def test_qwen3_vl_writes_one_timestamped_block_per_temporal_patch():
    _, processor = tiny_model_and_processor("qwen3_vl")
    frames = [Image.new("RGB", (32, 32))] * 3
    inputs = processor(videos=[Video(frames, [0.0, 1.0, 2.0])])
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    # pairs (0, 1) and (2, 2 repeated): times 0.5 and 2.0
    assert "<0.5 seconds><|vision_start|>" in text and "<2.0 seconds><|vision_start|>" in text
    assert text.count("<|vision_start|>") == 2
    assert (inputs["mm_token_type_ids"] == 2).sum() == (inputs["input_ids"] == processor.video_token_id).sum() > 0


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_vl"])
def test_video_embeddings_do_not_depend_on_batch_mates_or_padding(family, tmp_path, make_image):
    model, processor = tiny_model_and_processor(family)
    long_video = write_video(tmp_path / "long.mp4", 60)
    short_video, other_short_video = [make_image(30, 40)] * 2, [make_image(30, 40, seed=2)] * 2  # equal lengths
    texts = ["<|image_1|>\nRepresent the given video.", "a much longer text that pads the others quite a lot", None, "x", "y"]
    videos = [long_video, None, short_video, None, other_short_video]
    images = [None, None, None, make_image(), None]
    together = model.encode(texts=texts, videos=videos, images=images, batch_size=5)
    for index in range(5):
        alone = model.encode(texts=[texts[index]], videos=[videos[index]], images=[images[index]])
        torch.testing.assert_close(together[index : index + 1], alone, rtol=0, atol=1e-5)
    processor.tokenizer.padding_side = "left"
    torch.testing.assert_close(model.encode(texts=texts, videos=videos, images=images, batch_size=5), together, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["llava_onevision", "qwen2_5_vl"])
def test_grad_cache_row_slices_carry_their_videos(family, make_image):
    """Rows cut out of a batch (GradCache) embed as in the whole batch: each slice carries exactly its videos."""
    model, processor = tiny_model_and_processor(family)
    videos = [[make_image(30, 40)] * 3, None, [make_image(40, 30, seed=1)] * 2, None]
    inputs = processor(text=["a", "b", "c", None], videos=videos, images=[None, None, None, make_image()])
    with torch.no_grad():
        whole = model(**inputs).embeddings
        parts = [model(**slice_rows(inputs, start, start + 2, model.config.backbone_config)).embeddings for start in (0, 2)]
    torch.testing.assert_close(torch.cat(parts), whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["llava", "qwen2"])
def test_families_without_a_video_path_refuse_videos(family, make_image):
    model, _ = tiny_model_and_processor(family)
    with pytest.raises(ValueError, match=rf"backbone \({family}\) has no video path"):
        model.encode(texts=["a"], videos=[[make_image()]])


def test_an_item_takes_an_image_or_a_video(make_image):
    _, processor = tiny_model_and_processor("llava_onevision")
    with pytest.raises(ValueError, match="item 0: both an image and a video"):
        processor(text=["a"], images=[make_image()], videos=[[make_image()]])
    with pytest.raises(TypeError, match="item 0: a video must be a file path, a list of frames or a Video"):
        processor(text=["a"], videos=[make_image()])


def test_collator_accepts_video_rows(tmp_path, make_image):
    _, processor = tiny_model_and_processor("qwen2_vl")
    write_video(tmp_path / "clip.mp4", 12)
    make_image().save(tmp_path / "cat.png")
    rows = [
        {"qry": "find the clip", "qry_image_path": "", "pos_text": "<|image_1|> Represent the given video.",
         "pos_image_path": "clip.mp4", "neg_text": "", "neg_image_path": ""},
        {"qry": "<|image_1|> a cat", "qry_image_path": "cat.png", "pos_text": "a cat", "pos_image_path": "",
         "neg_text": "", "neg_image_path": ""},
    ]  # fmt: skip
    batch = ContrastiveCollator(processor, image_root=tmp_path)(rows)
    # frames 0 and 10 (3 fps of 30): one temporal step; 40x48 px in 4-px patches
    assert batch.inputs["video_grid_thw"].tolist() == [[1, 10, 12]]
    assert (batch.inputs["input_ids"][2] == processor.video_token_id).any()  # row 2: the first target
    assert batch.inputs["image_grid_thw"].shape[0] == 1


def test_trust_remote_code_load_embeds_videos_in_a_fresh_process(tmp_path):
    """A process that never imports llave_hf loads a checkpoint and embeds a video file as this one does."""
    video = write_video(tmp_path / "clip.mp4", 30)
    expected = {}
    for family in ("llava_onevision", "qwen3_vl"):
        model, _ = tiny_model_and_processor(family)
        model.save_pretrained(tmp_path / family)
        expected[family] = model.encode(texts=["<|image_1|>\nRepresent the given video."], videos=[video])
    script = """
import json, sys
from transformers import AutoModel
root, video = sys.argv[1], sys.argv[2]
out = {}
for family in sys.argv[3:]:
    model = AutoModel.from_pretrained(f"{root}/{family}", trust_remote_code=True)
    out[family] = model.encode(texts=["<|image_1|>\\nRepresent the given video."], videos=[video]).tolist()
assert "llave_hf" not in sys.modules
print(json.dumps(out))
"""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), video, *expected], capture_output=True, text=True,
        cwd=tmp_path, env=environment, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for family, embeddings in expected.items():
        torch.testing.assert_close(torch.tensor(out[family]), embeddings, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# retrieval metrics and the evaluator


def test_ranks_against_hand_computed_rankings_with_ties_and_several_captions():
    # 4 captions (captions 0, 1 of video 0; 2 of video 1; 3 of video 2) x 3 videos
    scores = np.array(
        [
            [0.9, 0.1, 0.2],  # video 0 first: rank 1
            [0.3, 0.3, 0.1],  # tie with video 1: pessimistic rank 2
            [0.5, 0.4, 0.6],  # video 1 third: rank 3
            [0.2, 0.8, 0.7],  # video 2 second: rank 2
        ]
    )
    caption_videos = [0, 0, 1, 2]
    assert text_to_video_ranks(scores, caption_videos).tolist() == [1, 2, 3, 2]
    # video 0 column: its captions 0.9 and 0.3; best 0.9 beats others (0.5, 0.2): rank 1
    # video 1 column: its caption 0.4 vs others 0.1, 0.3, 0.8: one above -> rank 2
    # video 2 column: its caption 0.7 vs others 0.2, 0.1, 0.6: rank 1
    assert video_to_text_ranks(scores, caption_videos).tolist() == [1, 2, 1]
    scores[1, 2] = 0.7  # ties the own caption of video 2: pessimistic rank 2
    assert video_to_text_ranks(scores, caption_videos).tolist() == [1, 2, 2]
    # caption 1 now scores 0.3, 0.3, 0.7: its video 0 ties one and trails one: rank 3. Ranks 1, 3, 3, 2
    assert text_to_video_ranks(scores, caption_videos).tolist() == [1, 3, 3, 2]
    metrics = video_retrieval_metrics(scores, caption_videos)
    assert metrics["text_to_video"] == {"R@1": 25.0, "R@5": 100.0, "R@10": 100.0, "MdR": 2.5, "MnR": 2.25}
    assert metrics["video_to_text"]["R@1"] == pytest.approx(100 / 3) and metrics["video_to_text"]["MnR"] == pytest.approx(5 / 3)
    # a collapsed encoder (all scores equal) ranks every item last
    assert text_to_video_ranks(np.zeros((4, 3)), caption_videos).tolist() == [3, 3, 3, 3]


def test_dataset_loaders(tmp_path):
    (tmp_path / "test.csv").write_text("key,vid_key,video_id,sentence\nret0,msr7,video7,a dog runs\nret1,msr9,video9,a cat\n")
    data = load_msrvtt(str(tmp_path / "test.csv"), str(tmp_path))
    assert data.video_ids == ["video7", "video9"] and data.caption_videos == [0, 1]
    assert data.video_paths[0] == str(tmp_path / "video7.mp4")
    with pytest.raises(FileNotFoundError, match=r"2 video file\(s\) not found: video video7 \("):
        data.check_files()
    import pickle

    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps({"vA": [["a", "man"], ["someone"]], "vB": [["b"]], "vC": [["c"]]}))
    (tmp_path / "test_list.txt").write_text("vA\nvB\n")
    msvd = load_msvd(str(tmp_path / "raw-captions.pkl"), str(tmp_path / "test_list.txt"), str(tmp_path))
    assert msvd.captions == ["a man", "someone", "b"] and msvd.caption_videos == [0, 0, 1]
    assert msvd.video_paths[0] == str(tmp_path / "vA.avi")
    (tmp_path / "test_list.txt").write_text("vA\nvZ\n")
    with pytest.raises(ValueError, match="no caption for test video vZ"):
        load_msvd(str(tmp_path / "raw-captions.pkl"), str(tmp_path / "test_list.txt"), str(tmp_path))


def test_evaluator_encodes_each_video_once_resumes_and_names_bad_videos(tmp_path):
    paths = [write_video(tmp_path / f"v{i}.mp4", 10 + 5 * i) for i in range(3)]
    data = VideoRetrievalData("toy", ["v0", "v1", "v2"], paths, ["zero", "one", "one again", "two", "zero"], [0, 1, 1, 2, 0])
    model, processor = tiny_model_and_processor("llava_onevision")
    calls = []

    def encode(**kwargs):
        calls.append(kwargs)
        return model.encode(**kwargs)

    evaluator = VideoRetrievalEvaluator(data, output_dir=str(tmp_path / "out"), chunk_size=2, show_progress_bar=False)
    results = evaluator(encode, processor)
    encoded_videos = [path for call in calls for path in call.get("videos") or []]
    assert sorted(encoded_videos) == sorted(paths)  # each once
    assert sum(len(call["texts"]) for call in calls if not call.get("videos")) == 4  # distinct captions
    assert all(call["instruction"] == "Find me an video that matches the given caption: " for call in calls if not call.get("videos"))
    # the scores are the metrics of the cosine matrix
    queries = model.encode(texts=data.captions, instruction="Find me an video that matches the given caption: ")
    videos = model.encode(texts=["<|image_1|>\nRepresent the given video."] * 3, videos=paths)
    expected = video_retrieval_metrics((queries @ videos.T).numpy(), data.caption_videos)
    assert results["text_to_video"] == pytest.approx(expected["text_to_video"])
    assert results["video_to_text"] == pytest.approx(expected["video_to_text"])
    # resume: drop the result and one chunk; only that chunk is encoded again
    os.remove(tmp_path / "out" / "toy.json")
    os.remove(tmp_path / "out" / "toy_embeddings" / "videos_00001.pt")
    calls.clear()
    again = evaluator(encode, processor)
    assert [call.get("videos") for call in calls] == [[paths[2]]]
    assert again["text_to_video"] == results["text_to_video"]
    # another run's folder is an error, not silently reused
    other = VideoRetrievalEvaluator(data, output_dir=str(tmp_path / "out"), query_instruction="Find: ")
    os.remove(tmp_path / "out" / "toy.json")
    with pytest.raises(ValueError, match="holds embeddings of another run .*query_instruction"):
        other(encode, processor)
    # a bad video is named
    (tmp_path / "v1.mp4").write_bytes(b"broken")
    bad = VideoRetrievalEvaluator(data, output_dir=None, show_progress_bar=False)
    with pytest.raises(ValueError, match=r"video v1 \(.*v1\.mp4\): cannot decode video file"):
        bad(model)


def test_llave_eval_video_cli_on_msvd_layout(tmp_path, capsys):
    from llave_hf.cli.evaluate_video import main

    model, _ = tiny_model_and_processor("qwen2_vl")
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "videos").mkdir()
    for index in range(2):
        write_video(tmp_path / "videos" / f"clip{index}.webm", 8 + 4 * index, codec="libvpx-vp9")
    (tmp_path / "captions.txt").write_text("clip0 a gray square\nclip0 it gets lighter\nclip1 another clip\nclip9 unused\n")
    (tmp_path / "test_list.txt").write_text("clip0\nclip1\n")
    arguments = [
        "--model", str(tmp_path / "model"), "--dataset", "msvd", "--captions", str(tmp_path / "captions.txt"),
        "--test-list", str(tmp_path / "test_list.txt"), "--videos", str(tmp_path / "videos"),
        "--output", str(tmp_path / "eval"), "--device", "cpu",
    ]  # fmt: skip
    main(arguments)
    table = capsys.readouterr().out
    assert "| MSVD | R@1 | R@5 | R@10 | MdR | MnR |" in table and "| text->video |" in table
    stored = json.loads((tmp_path / "eval" / "MSVD.json").read_text())
    assert stored["counts"] == {"videos": 2, "captions": 3}
    assert stored["text_to_video"]["R@5"] == 100.0  # 2 candidates: every caption's video is in the top 5
