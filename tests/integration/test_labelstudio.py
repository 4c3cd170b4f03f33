"""Label Studio in (``alwb add --labelstudio``) and out (``OUT/labelstudio.json``), on real image files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import make_shapes
from store_checks import label_history

from alwb.cli import main
from alwb.io.export import export_project
from alwb.io.labelstudio import ImageIndex, import_labelstudio, parse_time, reference_parts
from alwb.project import Project
from alwb.team.agreement import review_queue


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def choice(label: str) -> list[dict]:
    return [{"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def ann(label: str, who: object, when: str, **more: object) -> dict:
    return {"id": 1, "result": choice(label), "completed_by": who, "created_at": when, "was_cancelled": False, **more}


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """36 shape images under images/a (flat), and a second copy of circle_000.png's name under images/b."""
    truth = make_shapes(tmp_path / "images" / "a", 12, layout="flat")
    make_shapes(tmp_path / "images" / "b", 1, layout="flat", seed=5)  # circle_000.png, square_000.png, ... again
    for p in (tmp_path / "images" / "b").iterdir():
        truth[str(p.resolve())] = p.name.split("_")[0]
    return tmp_path / "images", truth


def test_labelstudio_export_comes_in_with_annotators_times_and_disagreements(images, tmp_path: Path, capsys) -> None:
    folder, truth = images
    (tmp_path / "secret.png").write_bytes((folder / "a" / "circle_001.png").read_bytes())  # outside --images
    tasks = [
        {  # an upload: 8 hex digits and a dash before the name; two annotators who agree
            "id": 1,
            "data": {"image": "/data/upload/3/1a2b3c4d-square_003.png"},
            "annotations": [
                ann("square", {"id": 7, "email": "ana@example.org"}, "2024-05-01T10:00:00.5Z"),
                ann("square", 8, "2024-05-01T11:00:00Z"),
            ],
            "predictions": [{"model_version": "m1", "score": 0.4, "result": choice("circle")}],
        },
        {  # two annotators who disagree: the later answer is the label, the item goes to Review
            "id": 2,
            "data": {"image": "s3://bucket/photos/triangle_004.png"},
            "annotations": [
                ann("triangle", {"id": 7, "email": "ana@example.org"}, "2024-05-02T09:00:00Z"),
                ann("square", 8, "2024-05-02T08:00:00Z"),
                ann("circle", 9, "2024-05-02T12:00:00Z", was_cancelled=True),  # skipped in Label Studio
            ],
        },
        {  # local files; the name is in a/ and b/: the reference's folder says which
            "id": 3,
            "data": {"image": "/data/local-files/?d=shoot/b/circle_000.png"},
            "annotations": [ann("circle", 8, "2024-05-03T08:00:00")],
        },
        {"id": 4, "data": {"image": "https://example.org/x/circle_000.png"}, "annotations": []},  # ambiguous
        {"id": 5, "data": {"image": "../secret.png"}, "annotations": [ann("circle", 8, "2024-05-03T08:00:00Z")]},
        {"id": 6, "data": {"image": "/etc/passwd"}, "annotations": [ann("circle", 8, "2024-05-03T08:00:00Z")]},
        {"id": 7, "data": {"image": "/data/upload/3/deadbeef-triangle_005.png"}, "annotations": [{"result": []}]},
        {"id": 8, "data": {"text": "no image here"}, "annotations": []},
    ]
    export = tmp_path / "ls.json"
    export.write_text(json.dumps(tasks))
    with Project.create(tmp_path / "proj", classes=["circle", "square", "triangle"]) as p:
        p.set_config(val_size=2)
    code, out, err = run_cli(capsys, "add", tmp_path / "proj", "--labelstudio", export, "--images", folder)
    assert code == 0, err
    assert "8 task(s), 4 image(s) found, 5 label(s) recorded from 2 annotator(s)" in out
    assert "1 item(s) with disagreeing annotators" in out
    assert "1 annotation(s) left out: skipped in Label Studio (was_cancelled)" in out
    assert "1 annotation(s) left out: no choices answer" in out and "1 prediction(s) ignored" in out
    assert "skipped task 4: 2 files named 'circle_000.png'" in out
    assert "skipped task 5: no file named 'secret.png'" in out
    assert "skipped task 6: no file named 'passwd'" in out and "skipped task 8: no image reference" in out
    with Project.open(tmp_path / "proj") as p:
        images_root = p.store.image_root()
        paths = {int(r["id"]): str(images_root.locate(r["path"])) for r in p.store.items()}
        assert sorted(Path(x).relative_to(folder).as_posix() for x in paths.values()) == [
            "a/square_003.png",
            "a/triangle_004.png",
            "a/triangle_005.png",
            "b/circle_000.png",
        ]
        current = {Path(paths[int(r["item_id"])]).name: (r["class"], r["annotator"]) for r in p.store.current_labels()}
        assert current == {
            "square_003.png": ("square", "ls-user-8"),
            "triangle_004.png": ("triangle", "ana@example.org"),  # 09:00 is after ben's 08:00
            "circle_000.png": ("circle", "ls-user-8"),
        }
        answers = [
            (Path(paths[int(r["item_id"])]).name, r["annotator"], r["class"]) for r in p.store.annotator_answers()
        ]
        assert ("square_003.png", "ana@example.org", "square") in answers and len(answers) == 5
        times = sorted(float(r["created_at"]) for r in p.store.annotator_answers())
        assert times[0] == parse_time("2024-05-01T10:00:00.5Z") == 1714557600.5
        queue = review_queue(p.store)
        assert [Path(paths[d.item_id]).name for d in queue] == ["triangle_004.png"]
        assert queue[0].answers == {"ana@example.org": "triangle", "ls-user-8": "square"}
        n_labels = len(p.store.annotator_answers())
    # the same file again: nothing is recorded twice
    code, out, _ = run_cli(capsys, "add", tmp_path / "proj", "--labelstudio", export, "--images", folder)
    assert code == 0 and "0 label(s) recorded" in out and "5 already recorded" in out
    with Project.open(tmp_path / "proj") as p:
        assert len(p.store.annotator_answers()) == n_labels


def test_a_bad_labelstudio_file_writes_nothing(images, tmp_path: Path, capsys) -> None:
    folder, _ = images
    with Project.create(tmp_path / "proj", classes=["circle", "square", "triangle"]):
        pass
    bad = tmp_path / "bad.json"
    for text, says in [
        ("{not json", "is not JSON"),
        ('{"tasks": []}', "expected a list of tasks"),
        ('[{"image": "x.png"}]', "have no 'data' object"),
        (
            json.dumps([{"data": {"image": "a/circle_001.png"}, "annotations": [ann("a/b", 1, "2024-01-01")]}]),
            "path separator",
        ),
    ]:
        bad.write_text(text)
        code, _, err = run_cli(capsys, "add", tmp_path / "proj", "--labelstudio", bad, "--images", folder)
        assert code == 2 and says in err, err
    two = [
        {
            "data": {"image": "circle_001.png"},
            "annotations": [
                {"result": [{"from_name": "shape", "type": "choices", "value": {"choices": ["circle"]}}]},
                {"result": [{"from_name": "quality", "type": "choices", "value": {"choices": ["good"]}}]},
            ],
        }
    ]
    bad.write_text(json.dumps(two))
    code, _, err = run_cli(capsys, "add", tmp_path / "proj", "--labelstudio", bad, "--images", folder)
    assert code == 2 and "--from-name" in err
    with Project.open(tmp_path / "proj") as p:
        assert p.store.item_count() == 0 and p.store.current_labels() == []
    code, out, _ = run_cli(capsys, "add", tmp_path / "proj", "--labelstudio", bad, "--images", folder, "--unlabeled")
    assert code == 0 and "0 label(s) recorded" in out  # --unlabeled: the images only
    with Project.open(tmp_path / "proj") as p:
        assert p.store.item_count() == 1 and p.store.current_labels() == []
    code, out, _ = run_cli(
        capsys, "add", tmp_path / "proj", "--labelstudio", bad, "--images", folder, "--from-name", "shape"
    )
    assert code == 0 and "1 label(s) recorded" in out


def test_references_never_leave_the_images_folder(tmp_path: Path) -> None:
    make_shapes(tmp_path / "imgs", 1, layout="flat")
    (tmp_path / "outside.png").write_bytes(b"x")
    (tmp_path / "imgs" / "link.png").symlink_to(tmp_path / "outside.png")
    index = ImageIndex(tmp_path / "imgs")
    assert "link.png" not in index.by_name  # a symlink out of the folder is not an image of it
    for ref in ("../outside.png", "/abs/../../outside.png", "file:///outside.png", "outside.png", "link.png"):
        assert isinstance(index.find(ref), str), ref
    assert reference_parts("/data/local-files/?d=a%2Fb/c%20d.png") == ["a", "b", "c d.png"]
    assert reference_parts("C:\\photos\\..\\x.png") == ["photos", "x.png"]  # the drive reads as a scheme
    assert index.find("gs://b/dir/square_000.png") == (tmp_path / "imgs" / "square_000.png").resolve()


def test_labelstudio_out_and_back_in_gives_the_same_labels(tmp_path: Path) -> None:
    truth = make_shapes(tmp_path / "tree", 6, layout="imagefolder")  # labeled by folder: source import
    with Project.create(tmp_path / "a") as a:
        a.set_config(val_size=3)
        a.add_images(tmp_path / "tree")
        ids = [int(r["id"]) for r in a.store.items()][::2]  # circles, squares, then triangles
        path_of = {int(r["id"]): str(a.store.image_root().locate(r["path"])) for r in a.store.items()}
        a.label([(i, truth[path_of[i]]) for i in ids[:6]], annotator="ana")
        a.label([(i, "circle") for i in ids[3:8]], annotator="ben")  # disagrees on some
        a.label([(ids[8], None)], annotator="ana")  # "none of these classes"
        a.store.record_review(ids[1], "rita", None, now=time.time() + 1)  # a reviewer decides "none" over ana
        later = max(float(r["created_at"]) for r in label_history(a.store, ids[4])) + 5
        a.store.record_review(ids[4], "rita", truth[path_of[ids[4]]], now=later)
        a.train(epochs=2, device="cpu")
        rep = export_project(a, tmp_path / "out", onnx=False)
        want = {r["sha256"]: (r["class"], r["annotator"]) for r in a.store.current_labels(include_none=True)}
        assert sum(c is None for c, _ in want.values()) == 2
        want_queue = sorted(a.store.item(d.item_id)["sha256"] for d in review_queue(a.store))
        assert len(want_queue) == 2  # ben's circles against ana's squares, less the one rita decided
        n_items = a.store.item_count()
        model_round = a.current_model()["round"]
    assert rep.labelstudio == tmp_path / "out" / "labelstudio.json"
    tasks = json.loads(rep.labelstudio.read_text())
    assert len(tasks) == n_items
    xml = (tmp_path / "out" / "labelstudio.xml").read_text()
    assert '<Choices name="choice" toName="image"' in xml and '<Choice value="triangle"/>' in xml
    assert '<Choice value="&lt;none&gt;"/>' in xml  # "none of these classes"; no class can be named so
    for t in tasks:  # Label Studio's documented task format
        assert t["data"]["image"].startswith("/data/local-files/?d=")
        for an in t["annotations"]:
            (res,) = an["result"]
            assert set(res) == {"from_name", "to_name", "type", "value"} and res["type"] == "choices"
            assert res["from_name"] == "choice" and res["to_name"] == "image"
            assert len(res["value"]["choices"]) == 1 and "completed_by" not in an
        (pred,) = t["predictions"]  # every item was scored (a small pool)
        assert pred["model_version"] == f"alwb-round-{model_round}" and 0 < pred["score"] <= 1
        assert pred["result"][0]["value"]["choices"][0] in {"circle", "square", "triangle"}
    assert sum(an["ground_truth"] for t in tasks for an in t["annotations"]) == 2
    nones = [an for t in tasks for an in t["annotations"] if an["result"][0]["value"]["choices"] == ["<none>"]]
    assert sorted((an["alwb_annotator"], an["ground_truth"]) for an in nones) == [("ana", False), ("rita", True)]

    with Project.create(tmp_path / "b", classes=["circle", "square", "triangle"]) as b:
        b.set_config(val_size=3)
        got = import_labelstudio(b, rep.labelstudio, tmp_path / "tree")
        assert got.skipped_tasks == [] and got.images_found == n_items
        have = {r["sha256"]: (r["class"], r["annotator"]) for r in b.store.current_labels(include_none=True)}
        assert have == want
        assert sorted(b.store.item(d.item_id)["sha256"] for d in review_queue(b.store)) == want_queue
