"""OpenAI's method object in the job spec: supervised, dpo, the deprecated top-level hyperparameters."""

import pytest

from lmtune.methods import AUTO_BETA, method_echo
from lmtune.spec import SpecError, parse_spec, resolve_hyperparameters

BASE = {"model": "m", "training_file": "t.jsonl"}


def test_supervised_is_the_default_and_deprecated_hyperparameters_are_its_own():
    deprecated = parse_spec({**BASE, "hyperparameters": {"n_epochs": 2, "batch_size": 4}})
    given = parse_spec(
        {**BASE, "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}}}
    )
    assert deprecated == given
    assert deprecated.method.type == "supervised" and deprecated.hyperparameters.n_epochs == 2
    assert parse_spec(BASE).method.type == "supervised"
    # what is stored is the method object; read back it is the same spec
    stored = deprecated.model_dump(mode="json")
    assert "hyperparameters" not in stored and stored["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    assert parse_spec(stored) == deprecated


def test_dpo_takes_beta_and_auto_resolves_it():
    spec = parse_spec({**BASE, "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "batch_size": 4}}}})
    resolved = resolve_hyperparameters(spec, 40)
    assert resolved.beta == 0.25 and resolved.batch_size == 4
    auto = resolve_hyperparameters(parse_spec({**BASE, "method": {"type": "dpo"}}), 40)
    assert auto.beta == AUTO_BETA
    assert resolve_hyperparameters(parse_spec(BASE), 40).beta is None


def test_dpo_learning_rate_is_its_own_and_supervised_is_unchanged():
    lora = {"training": {"lora": {"r": 4}}}
    assert resolve_hyperparameters(parse_spec(BASE), 40).learning_rate == 2e-5
    assert resolve_hyperparameters(parse_spec({**BASE, **lora}), 40).learning_rate == 2e-4
    dpo = {**BASE, "method": {"type": "dpo"}}
    assert resolve_hyperparameters(parse_spec(dpo), 40).learning_rate == 1e-6
    assert resolve_hyperparameters(parse_spec({**dpo, **lora}), 40).learning_rate == 1e-5


def test_deprecated_hyperparameters_join_a_dpo_method():
    spec = parse_spec({**BASE, "method": {"type": "dpo"}, "hyperparameters": {"n_epochs": 2}})
    assert spec.method.type == "dpo" and spec.hyperparameters.n_epochs == 2


@pytest.mark.parametrize(
    "body, message",
    [
        ({"method": {"type": "reinforcement"}}, r"method.reinforcement: Field required"),
        (
            {"method": {"type": "magic"}},
            r"method: type must be one of \['supervised', 'dpo', 'reinforcement'\], got 'magic'",
        ),
        ({"method": {"type": "dpo", "supervised": {}}}, r"method.dpo.supervised: unknown field"),
        (
            {"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}},
            r'method.dpo.hyperparameters.beta: must be "auto" or a number above 0 up to 10',
        ),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}}},
            r"method.supervised.hyperparameters.beta: unknown field",
        ),
        (
            {
                "hyperparameters": {"n_epochs": 2},
                "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 3}}},
            },
            r"hyperparameters: give them once, in method.supervised.hyperparameters",
        ),
    ],
)
def test_bad_methods_say_what_is_wrong(body, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({**BASE, **body})


def test_the_job_shows_the_method_as_given_then_as_resolved():
    spec = parse_spec({**BASE, "method": {"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2}}}})
    stored = spec.model_dump(mode="json")
    assert method_echo(stored, None) == {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto", "beta": "auto"}
        },
    }
    resolved = resolve_hyperparameters(spec, 40).model_dump()
    shown = method_echo(stored, resolved)["dpo"]["hyperparameters"]
    assert shown == {"n_epochs": 2, "batch_size": 1, "learning_rate_multiplier": 1.0, "beta": AUTO_BETA}
    # a job stored before methods existed
    old = {**BASE, "hyperparameters": {"n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": "auto"}}
    assert method_echo(old, None)["supervised"]["hyperparameters"]["n_epochs"] == 3
