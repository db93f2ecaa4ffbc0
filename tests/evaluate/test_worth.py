"""A corpus's worth: its student next to the teacher and to a student distilled the same way from a noise
corpus of the same size (written through the corpus writer, removed afterwards)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.corpus.index import read_manifest
from pipeline.corpus.loader import load_corpus
from pipeline.corpus.verify import verify_corpus
from pipeline.evaluate import common as evaluation
from pipeline.evaluate import worth as worth_mod
from pipeline.evaluate.noise import write_noise_corpus
from pipeline.teachers.classify import normalize
from tests.evaluate.test_distill import MEAN, STD, teachers, write_imagefolder  # noqa: F401 - fixture


def test_noise_corpus_is_shaped_like_its_source(tmp_path, make_corpus, teachers):
    layout = make_corpus(tmp_path / "c", shards_per_class=2, per_shard=3)
    info = evaluation.corpus_info(layout.root)
    noise = write_noise_corpus(info, tmp_path / "noise", teachers["tiny3"].model, mean=MEAN, std=STD, seed=1)
    assert verify_corpus(noise.root).ok
    assert (noise.num_images, noise.num_classes, noise.img_size, noise.class_ids) == (
        info.num_images, info.num_classes, info.img_size, info.class_ids)
    source, copy = read_manifest(layout.root)["shards"], read_manifest(noise.root)["shards"]
    fields = ("shard_id", "label", "class_name", "first_index", "count")
    assert [[r[f] for f in fields] for r in copy] == [[r[f] for f in fields] for r in source]
    images, labels, soft = [], [], []
    for image, label, logits, _kept in load_corpus(noise.root, soft_labels=True):
        images.append(image), labels.append(label), soft.append(logits)
    x = torch.stack(images)
    assert abs(float(x.mean()) - 0.5) < 0.05 and 0.2 < float(x.std()) < 0.3  # 0.5 + 0.25 N(0, 1), clipped
    with torch.no_grad():  # the teacher's logits on the stored (8-bit) images are the soft labels
        expected = teachers["tiny3"].model(normalize(x, MEAN, STD))
    assert torch.allclose(torch.stack([torch.as_tensor(s) for s in soft]).float(), expected, atol=2e-2)
    again = write_noise_corpus(info, tmp_path / "noise2", teachers["tiny3"].model, mean=MEAN, std=STD, seed=1)
    assert [p.read_bytes() for p in sorted(Path(again.root, "data").iterdir())] == [
        p.read_bytes() for p in sorted(Path(noise.root, "data").iterdir())]


def _top1_by_hand(model: torch.nn.Module, folder: Path, class_ids: dict[str, int]) -> float:
    """Top-1 of ``model`` on an ImageFolder of 16x16 PNGs, normalised with MEAN/STD, worked out here."""
    from PIL import Image

    correct = total = 0
    with torch.no_grad():
        for path in sorted(folder.glob("*/*.png")):
            pixels = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
            x = (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
            correct += int(model.eval()(x[None]).argmax(1).item() == class_ids[path.parent.name])
            total += 1
    return correct / total


def test_corpus_worth_distils_both_students_the_same_way(tmp_path, make_corpus, teachers, monkeypatch):
    layout = make_corpus(tmp_path / "c")
    folder = write_imagefolder(tmp_path / "eval", ["class0", "class1", "class2"])
    info = evaluation.corpus_info(layout.root)
    eval_set = evaluation.eval_source(str(folder), class_ids=info.class_ids, img_size=info.img_size)
    trained: list[tuple[int, int, int | None]] = []
    students: list[torch.nn.Module] = []
    real_distill = worth_mod.distill

    def recording_distill(student, info, cfg, **kw):
        trained.append((info.num_images, cfg.steps, cfg.seed))
        result = real_distill(student, info, cfg, **kw)
        students.append(result.model)
        return result

    monkeypatch.setattr(worth_mod, "distill", recording_distill)
    temp_roots: list[str] = []
    real_noise = worth_mod.write_noise_corpus
    monkeypatch.setattr(worth_mod, "write_noise_corpus",
                        lambda like, out, *a, **kw: temp_roots.append(str(out)) or real_noise(like, out, *a, **kw))
    teacher = teachers["tiny3"]
    with torch.no_grad():  # a teacher that answers class1 whatever it sees: right on 3 of the 9 held-out images
        teacher.model.head.weight.zero_()
        teacher.model.head.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    result = worth_mod.corpus_worth(layout.root, teacher, eval_set,
                                    worth_mod.WorthSettings(student="toy-student", steps=3, batch_size=4))
    assert trained == [(12, 3, 0), (12, 3, 0)]  # the corpus, then noise of its size, same budget and seed
    assert not Path(temp_roots[0]).exists()  # the noise corpus is gone
    assert result.student == "toy-student" and result.steps == 3 and result.corpus_images == 12
    assert result.num_classes == 3 and result.eval_images == 9
    assert result.teacher_top1 == 3 / 9
    # each student is scored on the held-out images, the corpus's student as the corpus's
    corpus_student, noise_student = students
    assert result.corpus_top1 == _top1_by_hand(corpus_student, folder, info.class_ids)
    assert result.noise_top1 == _top1_by_hand(noise_student, folder, info.class_ids)


@pytest.mark.slow  # two spawned processes, each importing torch and training a student
def test_students_trained_in_parallel_processes_equal_those_trained_in_turn(tmp_path, make_corpus, teachers):
    layout = make_corpus(tmp_path / "c")
    info = evaluation.corpus_info(layout.root)
    noise = write_noise_corpus(info, tmp_path / "noise", teachers["tiny3"].model, mean=MEAN, std=STD, seed=1)
    config = worth_mod.DistillConfig(steps=3, batch_size=4, show_progress=False)
    jobs = [worth_mod.StudentJob(source, teachers["tiny3"].model, (MEAN, STD), "toy-student", config, threads=1)
            for source in (info, noise)]
    threads = torch.get_num_threads()
    try:
        in_turn = [r.model for r in worth_mod.train_students(jobs)]
    finally:
        torch.set_num_threads(threads)
    at_once = [r.model for r in worth_mod.train_students(jobs, parallel=True)]
    assert torch.get_num_threads() == threads  # the workers' thread setting stays in the workers
    for a, b in zip(in_turn, at_once):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(in_turn[0].state_dict().values(),
                                                     in_turn[1].state_dict().values()))  # two different corpora
