import pytest

from lmtune.spec import JobSpec, SpecError, load_spec, parse_spec, resolve_hyperparameters

BASE = {"model": "m", "training_file": "t.jsonl"}


def test_yaml_spec_loads_with_paths_relative_to_its_folder(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "spec.yaml").write_text(
        "model: ./model\ntraining_file: train.jsonl\nhyperparameters: {n_epochs: 2, batch_size: 8, "
        "learning_rate_multiplier: auto}\ntraining: {learning_rate: 1.0e-3, lr_scheduler: linear}\n"
    )
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.model == str(tmp_path / "model")
    assert spec.training_file == str(tmp_path / "train.jsonl")
    assert spec.hyperparameters.n_epochs == 2 and spec.hyperparameters.learning_rate_multiplier == "auto"
    assert spec.training.learning_rate == 1e-3 and spec.training.lr_scheduler == "linear"


def test_a_hub_id_stays_as_given(tmp_path):
    (tmp_path / "spec.json").write_text('{"model": "org/some-model", "training_file": "t.jsonl"}')
    assert load_spec(tmp_path / "spec.json").model == "org/some-model"


def test_unknown_keys_are_refused_with_their_place():
    with pytest.raises(SpecError, match=r"training\.learning_rat: unknown field"):
        parse_spec({**BASE, "training": {"learning_rat": 0.1}})


@pytest.mark.parametrize(
    "hyperparameters, message",
    [
        ({"n_epochs": 0}, r'hyperparameters\.n_epochs: must be "auto" or an integer from 1 to 50, got 0'),
        ({"batch_size": 1000}, r"hyperparameters\.batch_size: .* from 1 to 256, got 1000"),
        ({"learning_rate_multiplier": -1}, r"learning_rate_multiplier: .* above 0 up to 10, got -1"),
        ({"n_epochs": "many"}, r"n_epochs: must be \"auto\" or an integer .* got 'many'"),
    ],
)
def test_bad_hyperparameters_name_the_field_and_the_range(hyperparameters, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**BASE, "hyperparameters": hyperparameters})


def test_bad_training_setting_names_the_field():
    with pytest.raises(SpecError, match=r"training\.lr_scheduler: Input should be 'cosine', 'linear' or 'constant'"):
        parse_spec({**BASE, "training": {"lr_scheduler": "exp"}})


@pytest.mark.parametrize("given, mode", [(None, "selective"), (True, "full"), (False, "off"), ("full", "full")])
def test_activation_checkpointing_is_selective_unless_asked_and_takes_its_old_true_and_false(given, mode):
    training = {} if given is None else {"gradient_checkpointing": given}
    assert parse_spec({**BASE, "training": training}).training.gradient_checkpointing == mode
    with pytest.raises(
        SpecError, match=r"training\.gradient_checkpointing: Input should be 'selective', 'full' or 'off'"
    ):
        parse_spec({**BASE, "training": {"gradient_checkpointing": "some"}})


def test_auto_epochs_follow_dataset_size():
    def epochs(n):
        return resolve_hyperparameters(JobSpec(**BASE), n).n_epochs

    assert epochs(10) == 10  # small sets are seen at least 100 times in all
    assert epochs(1000) == 3
    assert epochs(100_000) == 1


def test_auto_batch_size_is_a_whole_number_of_micro_batches():
    spec = parse_spec({**BASE, "training": {"gradient_accumulation_steps": 2}})
    resolved = resolve_hyperparameters(spec, 10_000, world_size=3)
    assert resolved.batch_size == 24  # 0.2% of 10k = 20, rounded up to a multiple of 2 x 3
    assert resolved.micro_batch_size == 4


def test_absolute_learning_rate_wins_over_the_multiplier():
    spec = parse_spec({**BASE, "hyperparameters": {"learning_rate_multiplier": 2}})
    assert resolve_hyperparameters(spec, 100).learning_rate == pytest.approx(4e-5)
    spec = parse_spec({**BASE, "hyperparameters": {"learning_rate_multiplier": 2}, "training": {"learning_rate": 0.01}})
    assert resolve_hyperparameters(spec, 100).learning_rate == 0.01


def test_batch_that_does_not_split_into_micro_batches_is_refused():
    spec = parse_spec({**BASE, "hyperparameters": {"batch_size": 6}, "training": {"gradient_accumulation_steps": 4}})
    with pytest.raises(SpecError, match="batch_size: 6 .* use a multiple of 4"):
        resolve_hyperparameters(spec, 100)


def test_total_steps_count_partial_batches_and_respect_max_steps():
    spec = parse_spec({**BASE, "hyperparameters": {"n_epochs": 2, "batch_size": 8}})
    assert resolve_hyperparameters(spec, 20).total_steps == 6
    capped = parse_spec({**BASE, "hyperparameters": {"n_epochs": 2, "batch_size": 8}, "training": {"max_steps": 4}})
    assert resolve_hyperparameters(capped, 20).total_steps == 4
