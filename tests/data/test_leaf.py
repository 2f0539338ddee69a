"""LEAF directories: one client per user, each task's features, and every refusal."""

from __future__ import annotations

import doctest
import json
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fedbus.data import leaf
from fedbus.data.leaf import SENT140_BUCKETS, SHAKESPEARE_LETTERS, LeafDataset
from fedbus.data.registry import DATASETS
from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.plugins import Settings
from fedbus.run import load_config
from fedbus.run.federation import build_federation

#: One user's samples: ``(train x, train y, test x, test y)``.
UserSamples = tuple[list[Any], list[Any], list[Any], list[Any]]


def write_leaf(root: Path, users: dict[str, UserSamples], files: int = 1) -> Path:
    """A LEAF data directory: ``train/`` and ``test/``, users dealt over ``files`` files."""
    for split, (x_at, y_at) in (("train", (0, 1)), ("test", (2, 3))):
        (root / split).mkdir(parents=True)
        names = list(users)
        for part in range(files):
            mine = names[part::files]
            document = {
                "users": mine,
                "num_samples": [len(users[name][y_at]) for name in mine],
                "user_data": {
                    name: {"x": users[name][x_at], "y": users[name][y_at]} for name in mine
                },
            }
            write_json(root / split / f"all_data_{part}_{split}.json", document)
    return root


def write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document), encoding="utf-8")


def femnist_users(num_users: int) -> dict[str, UserSamples]:
    """Writers whose images light pixel ``label``: learnable, and every value known."""
    users: dict[str, UserSamples] = {}
    for k in range(num_users):
        labels = [(k + j) % 3 for j in range(5)]
        images = [[0.0] * 784 for _ in labels]
        for j, (image, label) in enumerate(zip(images, labels, strict=True)):
            image[label * 100 : label * 100 + 50] = [1.0] * 50
            image[783] = (k * 10 + j) / 1000  # tells the samples apart
        users[f"f{k:04d}_{k % 7}"] = (images[:4], labels[:4], images[4:], labels[4:])
    return users


def write_femnist(root: Path, num_users: int = 6) -> Path:
    """A tiny LEAF FEMNIST directory of ``num_users`` writers."""
    return write_leaf(root, femnist_users(num_users), files=2)


def refusal(root: Path, task: str = "femnist", num_clients: int = 2) -> str:
    with pytest.raises(InvalidArgumentError) as caught:
        LeafDataset(root, task, num_clients)
    return str(caught.value)


def test_the_module_example_runs() -> None:
    result = doctest.testmod(leaf)
    assert result.attempted > 0
    assert result.failed == 0


# --- one client per user -----------------------------------------------------------------------


def test_each_client_holds_exactly_its_users_train_and_test_samples_in_order(
    tmp_path: Path,
) -> None:
    users = femnist_users(5)
    data = LeafDataset(write_leaf(tmp_path, users, files=2), "femnist", num_clients=5)
    assert data.users == tuple(sorted(users))
    assert (data.num_clients, data.num_features, data.num_classes) == (5, 784, 62)
    for index, name in enumerate(data.users):
        x_train, y_train, x_test, y_test = users[name]
        local = data.client(index)
        assert local.x_train.dtype == np.float32
        assert local.y_train.dtype == np.int64
        np.testing.assert_array_equal(local.x_train, np.asarray(x_train, dtype=np.float32))
        np.testing.assert_array_equal(local.y_train, y_train)
        np.testing.assert_array_equal(local.x_test, np.asarray(x_test, dtype=np.float32))
        np.testing.assert_array_equal(local.y_test, y_test)
    x, y = data.test_set()
    expected = [users[name] for name in data.users]
    np.testing.assert_array_equal(x, np.concatenate([np.float32(u[2]) for u in expected]))
    np.testing.assert_array_equal(y, np.concatenate([u[3] for u in expected]))


def test_client_gives_equal_fresh_arrays_on_every_call(tmp_path: Path) -> None:
    data = LeafDataset(write_femnist(tmp_path), "femnist", num_clients=3)
    first = data.client(1)
    first.x_train[:] = -1.0
    again = data.client(1)
    assert not (again.x_train == -1.0).any()
    np.testing.assert_array_equal(again.x_train, data.client(1).x_train)


def test_the_seed_chooses_the_users_whatever_the_file_order(tmp_path: Path) -> None:
    users = femnist_users(9)
    backwards = dict(reversed(list(users.items())))
    one_file = write_leaf(tmp_path / "a", users, files=1)
    three_files = write_leaf(tmp_path / "b", backwards, files=3)
    chosen = LeafDataset(one_file, "femnist", num_clients=4, seed=5).users
    assert LeafDataset(three_files, "femnist", num_clients=4, seed=5).users == chosen
    names = sorted(users)
    picks = np.sort(np.random.default_rng(5).choice(9, size=4, replace=False))
    assert chosen == tuple(names[i] for i in picks)
    assert LeafDataset(one_file, "femnist", num_clients=4, seed=6).users != chosen


def test_users_that_leafs_split_dropped_are_ignored(tmp_path: Path) -> None:
    root = write_femnist(tmp_path, 2)
    for path in (root / "train").glob("*.json"):
        document = json.loads(path.read_text())
        document["user_data"]["dropped"] = {"x": [], "y": []}  # as split_data.py leaves them
        document["hierarchies"] = ["ignored"]
        write_json(path, document)
    assert LeafDataset(root, "femnist", num_clients=2).users == tuple(sorted(femnist_users(2)))


# --- the four tasks -----------------------------------------------------------------------------


def test_shakespeare_characters_become_ids_in_leafs_alphabet(tmp_path: Path) -> None:
    assert len(SHAKESPEARE_LETTERS) == 80
    line = ("\n !To be, or not to be}" * 4)[:80]
    users = {"ROMEO": ([line, "}" + line[1:]], ["a", "}"], [line], ["\n"])}
    data = LeafDataset(write_leaf(tmp_path, users), "shakespeare", num_clients=1)
    assert (data.num_features, data.num_classes) == (80, 80)
    local = data.client(0)
    assert local.x_train.shape == (2, 80)
    assert local.x_train[0, :4].tolist() == [0.0, 1.0, 2.0, SHAKESPEARE_LETTERS.index("T")]
    assert local.x_train[1, 0] == 79.0  # "}" ends the alphabet
    assert local.y_train.tolist() == [53, 79]  # "a" follows "[" and "]" after the capitals
    assert local.y_test.tolist() == [0]


def test_shakespeare_refuses_a_character_outside_the_alphabet(tmp_path: Path) -> None:
    users = {"HAMLET": (["a" * 79 + "|"], ["a"], ["a" * 80], ["b"])}
    message = refusal(write_leaf(tmp_path, users), "shakespeare", 1)
    assert "all_data_0_train.json: user 'HAMLET', x[0]" in message
    assert "'|' is not in LEAF's 80-letter Shakespeare alphabet" in message


def bucket(word: str) -> int:
    return zlib.crc32(word.encode("utf-8")) % SENT140_BUCKETS


def tweet(text: str) -> list[str]:
    return ["1467810369", "Mon Apr 06 22:19:45 PDT 2009", "NO_QUERY", "someone", text]


@pytest.mark.parametrize("positive", [1, 4], ids=["leaf-0-1", "sentiment140-0-4"])
def test_sent140_counts_hashed_lower_cased_words(tmp_path: Path, positive: int) -> None:
    users = {"someone": ([tweet("Good GOOD day"), tweet("")], [positive, 0], [tweet("day")], [0])}
    data = LeafDataset(write_leaf(tmp_path, users), "sent140", num_clients=1)
    assert (data.num_features, data.num_classes) == (SENT140_BUCKETS, 2)
    local = data.client(0)
    expected = np.zeros((2, SENT140_BUCKETS), dtype=np.float32)
    expected[0, bucket("good")] += 2
    expected[0, bucket("day")] += 1
    np.testing.assert_array_equal(local.x_train, expected)
    assert local.y_train.tolist() == [1, 0]
    assert local.x_test[0, bucket("day")] == 1.0
    assert local.x_test.sum() == 1.0


def test_sent140_refuses_a_neutral_label(tmp_path: Path) -> None:
    users = {"someone": ([tweet("meh")], [2], [tweet("ok")], [0])}
    message = refusal(write_leaf(tmp_path, users), "sent140", 1)
    assert "user 'someone', y[0]: expected 0 (negative) or 1 (positive" in message
    assert "got 2" in message


def write_celeba(root: Path, images: dict[str, Image.Image], users: dict[str, UserSamples]) -> Path:
    folder = root / "raw" / "img_align_celeba"
    folder.mkdir(parents=True)
    for name, image in images.items():
        image.save(folder / name)
    return write_leaf(root, users)


def test_celeba_reads_grayscale_images(tmp_path: Path) -> None:
    gradient = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16)
    images = {"000001.png": gradient, "000002.png": Image.new("L", (8, 8), 51)}
    users = {"celeb": (["000001.png"], [1.0], ["000002.png"], [0.0])}  # LEAF writes floats
    data = LeafDataset(write_celeba(tmp_path, images, users), "celeba", 1, image_size=4)
    assert (data.num_features, data.num_classes) == (16, 2)
    local = data.client(0)
    np.testing.assert_allclose(local.x_train[0], np.arange(16) * 16 / 255, rtol=1e-6)
    np.testing.assert_allclose(local.x_test[0], np.full(16, 0.2), rtol=1e-6)  # 8x8 resized
    assert (local.y_train.tolist(), local.y_test.tolist()) == ([1], [0])


def test_celeba_reads_rgb_images_channel_first(tmp_path: Path) -> None:
    images = {
        "000001.png": Image.new("RGB", (3, 3), (255, 0, 51)),
        "000002.jpg": Image.new("RGB", (3, 3), (128, 128, 128)),
    }
    users = {"celeb": (["000001.png"], [0], ["000002.jpg"], [1])}
    root = write_celeba(tmp_path, images, users)
    data = LeafDataset(root, "celeba", 1, image_size=3, grayscale=False)
    assert data.num_features == 27
    local = data.client(0)
    expected = np.repeat(np.float32([1.0, 0.0, 0.2]), 9)  # all red, then green, then blue
    np.testing.assert_allclose(local.x_train[0], expected, rtol=1e-6)
    np.testing.assert_allclose(local.x_test[0], np.full(27, 128 / 255), atol=3 / 255)  # JPEG


def test_celeba_reads_a_clients_images_once_while_it_is_recent(tmp_path: Path) -> None:
    images = {"a.png": Image.new("L", (2, 2), 0), "b.png": Image.new("L", (2, 2), 255)}
    users = {"celeb": (["a.png"], [0], ["b.png"], [1])}
    root = write_celeba(tmp_path, images, users)
    data = LeafDataset(root, "celeba", 1, image_size=2)
    first = data.client(0)
    for name in images:
        (root / "raw" / "img_align_celeba" / name).unlink()
    np.testing.assert_array_equal(data.client(0).x_train, first.x_train)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("000003.jpg", None, "000003.jpg: image not found"),
        ("000003.jpg", b"not an image", "000003.jpg: not a readable image"),
    ],
    ids=["missing", "not-an-image"],
)
def test_celeba_refuses_a_missing_or_broken_image(
    tmp_path: Path, name: str, content: bytes | None, expected: str
) -> None:
    users = {"celeb": (["000001.png"], [0], [name], [1])}
    root = write_celeba(tmp_path, {"000001.png": Image.new("L", (2, 2))}, users)
    if content is not None:
        (root / "raw" / "img_align_celeba" / name).write_bytes(content)
    assert expected in refusal(root, "celeba", 1)


def test_celeba_refuses_a_file_name_outside_the_image_folder(tmp_path: Path) -> None:
    users = {"celeb": (["../../secret.png"], [0], ["000001.png"], [1])}
    root = write_celeba(tmp_path, {"000001.png": Image.new("L", (2, 2))}, users)
    message = refusal(root, "celeba", 1)
    assert "user 'celeb', x[0]" in message
    assert "expects an image file name without a folder" in message


def test_celeba_needs_leafs_image_folder(tmp_path: Path) -> None:
    users = {"celeb": (["000001.png"], [0], ["000002.png"], [1])}
    message = refusal(write_leaf(tmp_path, users), "celeba", 1)
    assert f"{tmp_path / 'raw' / 'img_align_celeba'}: no such directory" in message


# --- refusals ----------------------------------------------------------------------------------


def edit_first(root: Path, split: str, change: Callable[[dict[str, Any]], None]) -> None:
    path = sorted((root / split).glob("*.json"))[0]
    document = json.loads(path.read_text())
    change(document)
    write_json(path, document)


def list_twice(document: dict[str, Any], index: int) -> dict[str, Any]:
    """``users`` and ``num_samples`` with user ``index`` listed a second time."""
    return {
        "users": [*document["users"], document["users"][index]],
        "num_samples": [*document["num_samples"], document["num_samples"][index]],
    }


def drop_user(document: dict[str, Any], name: str) -> None:
    index = document["users"].index(name)
    del document["users"][index], document["num_samples"][index], document["user_data"][name]


def first_user(document: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = document["user_data"][document["users"][0]]
    return table


REFUSALS: dict[str, tuple[Callable[[Path], None], str]] = {
    "no-train-dir": (
        lambda root: shutil.rmtree(root / "train"),
        "train: no such directory; expected LEAF's data directory of a task (data/<task>/data)",
    ),
    "no-test-dir": (
        lambda root: shutil.rmtree(root / "test"),
        "test: no such directory; expected LEAF's data directory of a task",
    ),
    "no-json": (
        lambda root: [path.unlink() for path in (root / "train").iterdir()],
        "train: no .json file; run LEAF's preprocess.sh with -t sample",
    ),
    "not-json": (
        lambda root: (root / "train" / "all_data_0_train.json").write_text('{"users": [,'),
        "all_data_0_train.json: not valid JSON (Expecting value at line 1, column 12)",
    ),
    "nan": (
        lambda root: (root / "train" / "all_data_0_train.json").write_text('{"users": NaN}'),
        "all_data_0_train.json: not valid LEAF JSON (NaN is not a number LEAF writes)",
    ),
    "not-an-object": (
        lambda root: write_json(root / "train" / "all_data_0_train.json", [1, 2]),
        "all_data_0_train.json: expected a JSON object, got a list of 2 numbers",
    ),
    "no-num-samples": (
        lambda root: edit_first(root, "train", lambda doc: doc.pop("num_samples")),
        "all_data_0_train.json: no num_samples; a LEAF file holds users, num_samples and user_data",
    ),
    "wrong-count": (
        lambda root: edit_first(root, "test", lambda doc: doc["num_samples"].__setitem__(0, 7)),
        "all_data_0_test.json: user 'f0000_0': num_samples says 7 but it has 1 samples",
    ),
    "x-y-lengths": (
        lambda root: edit_first(root, "train", lambda doc: first_user(doc)["y"].pop()),
        "user 'f0000_0': x has 4 samples but y has 3 labels",
    ),
    "listed-twice": (
        lambda root: edit_first(root, "train", lambda doc: doc.update(list_twice(doc, 0))),
        "all_data_0_train.json: user 'f0000_0' is listed twice in users",
    ),
    "no-user-data": (
        lambda root: edit_first(root, "train", lambda doc: doc["user_data"].pop("f0000_0")),
        "user 'f0000_0': user_data must give it lists x and y, got null",
    ),
    "short-image": (
        lambda root: edit_first(root, "train", lambda doc: first_user(doc)["x"][2].pop()),
        "user 'f0000_0', x[2]: data.leaf_task = \"femnist\" expects 784 numbers (a 28 x 28 "
        "image), got a list of 783 numbers",
    ),
    "label-out-of-range": (
        lambda root: edit_first(root, "test", lambda doc: first_user(doc)["y"].__setitem__(0, 62)),
        "all_data_0_test.json: user 'f0000_0', y[0]: expected a class in 0..61, got 62",
    ),
    "unlisted-samples": (
        lambda root: edit_first(
            root, "train", lambda doc: doc["user_data"].update(ghost={"x": [[0] * 784], "y": [1]})
        ),
        "user_data holds samples of 'ghost', who is not listed in users",
    ),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_a_bad_leaf_directory_is_refused_naming_the_file_and_user(
    tmp_path: Path, case: str
) -> None:
    root = write_femnist(tmp_path, 4)
    damage, expected = REFUSALS[case]
    damage(root)
    assert expected in refusal(root)


@pytest.mark.parametrize(("present", "absent"), [("train", "test"), ("test", "train")])
def test_a_user_in_only_one_split_is_refused(tmp_path: Path, present: str, absent: str) -> None:
    root = write_femnist(tmp_path, 4)
    edit_first(root, absent, lambda doc: drop_user(doc, "f0002_2"))
    message = refusal(root)
    assert f"user 'f0002_2' (and 0 more) is in {present}/ but not in {absent}/" in message
    assert "-t sample" in message


def test_a_user_in_two_files_of_a_split_is_refused(tmp_path: Path) -> None:
    root = write_femnist(tmp_path, 4)
    twin = root / "train" / "all_data_9_train.json"
    twin.write_text((root / "train" / "all_data_0_train.json").read_text())
    message = refusal(root)
    assert "user 'f0000_0' is listed twice in" in message
    assert "all_data_0_train.json and all_data_9_train.json" in message


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    root = write_femnist(tmp_path, 2)
    path = root / "train" / "all_data_0_train.json"
    path.write_text(path.read_text().replace('"users"', '"users": [], "users"', 1))
    assert "all_data_0_train.json: key 'users' appears twice in one object" in refusal(root)


def test_a_file_over_the_size_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_femnist(tmp_path, 2)
    monkeypatch.setattr(leaf, "MAX_JSON_BYTES", 1000)
    message = refusal(root)
    assert "all_data_0_train.json: " in message
    assert "bytes, more than the 1000" in message


@pytest.mark.parametrize(
    ("task", "looks_like"),
    [("femnist", "shakespeare"), ("sent140", "shakespeare"), ("shakespeare", "femnist")],
)
def test_a_task_that_does_not_match_the_files_says_what_they_look_like(
    tmp_path: Path, task: str, looks_like: str
) -> None:
    if looks_like == "shakespeare":
        users = {"ROMEO": (["x" * 80], ["y"], ["z" * 80], ["a"])}
        root = write_leaf(tmp_path, users)
    else:
        root = write_femnist(tmp_path, 2)
    message = refusal(root, task, 1)
    assert f'data.leaf_task = "{task}" expects' in message
    assert f'it looks like LEAF {looks_like} data: set data.leaf_task = "{looks_like}"' in message


def test_fewer_users_than_clients_is_refused_with_both_numbers(tmp_path: Path) -> None:
    root = write_femnist(tmp_path, 3)
    message = refusal(root, num_clients=5)
    assert f"{root}: 3 LEAF users, fewer than the 5 clients asked for" in message
    assert "federation.num_clients to at most 3" in message


def test_a_file_changed_after_the_check_is_refused_when_read_again(tmp_path: Path) -> None:
    root = write_femnist(tmp_path, 2)
    data = LeafDataset(root, "femnist", num_clients=2)
    edit_first(root, "train", lambda doc: first_user(doc)["y"].__setitem__(0, 1))
    with pytest.raises(InvalidArgumentError, match="changed since the run checked it"):
        data.client(0)


def test_the_registered_builder_reads_the_data_keys_and_raises_config_errors(
    tmp_path: Path,
) -> None:
    root = write_femnist(tmp_path, 4)

    def settings(**data: Any) -> Settings:
        defaults = {"path": str(root), "leaf_task": "femnist", "image_size": 28, "grayscale": True}
        return Settings({"data": defaults | data, "federation": {"num_clients": 3, "seed": 2}})

    build = DATASETS.get("leaf").build
    data = build(settings())
    assert isinstance(data, LeafDataset)
    assert data.users == LeafDataset(root, "femnist", 3, seed=2).users
    with pytest.raises(ConfigError, match=r'data\.dataset = "leaf" .*data\.leaf_task = "celeba"'):
        build(settings(leaf_task="celeba"))


# --- a whole run -------------------------------------------------------------------------------


def test_a_short_federation_learns_on_a_leaf_femnist_directory(tmp_path: Path) -> None:
    root = write_femnist(tmp_path / "femnist", 8)
    config = load_config(
        None,
        [
            "data.dataset=leaf",
            f"data.path={root}",
            "data.leaf_task=femnist",
            "model.name=softmax",
            "federation.num_clients=6",
            "federation.clients_per_round=3",
            "federation.num_rounds=3",
            "trainer.lr=0.5",
            "run.plot=false",
        ],
    )
    federation = build_federation(config)
    federation.simulation.run()
    assert federation.server.finished, federation.server.failure
    assert federation.dataset.num_features == 784
    assert federation.server.history[-1].test_accuracy == 1.0
