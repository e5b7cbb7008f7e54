"""The result frame: identity and order of rows, input rules, column clashes, pandas 3 types.

These run on the offline demo model (no latency), which is deterministic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import notebook_kit as kit
from notebook_kit.frame import STATUS_COLUMNS


def demo() -> kit.DemoProvider:
    return kit.DemoProvider(latency=0.0)


async def run(data: pd.DataFrame | pd.Series, *args: object, **kwargs: object) -> pd.DataFrame:
    kwargs.setdefault("provider", demo())
    kwargs.setdefault("progress", False)
    return await kit.run_df(data, *args, **kwargs)  # type: ignore[arg-type]


async def test_rows_keep_index_order_and_duplicate_labels() -> None:
    df = pd.DataFrame(
        {"prompt": [f"question {i}" for i in range(50)]},
        index=[i % 3 for i in range(50)],  # labels repeat
    )
    df_before = df.copy()
    result = await run(df, "prompt", concurrency=7)
    assert list(result.index) == list(df.index)
    assert result["response"].tolist() == [f"[demo] You asked: question {i}" for i in range(50)]
    pd.testing.assert_frame_equal(df, df_before)  # the input is never mutated
    assert list(result.columns) == ["prompt", "response", *STATUS_COLUMNS]


async def test_multiindex_is_kept() -> None:
    index = pd.MultiIndex.from_tuples([("a", 1), ("a", 1), ("b", 2)], names=["k", "n"])
    df = pd.DataFrame({"prompt": ["x", "y", "z"]}, index=index)
    result = await run(df, "prompt")
    assert result.index.equals(index)
    assert result["response"].str.endswith(("x", "y", "z")).all()


async def test_series_is_accepted_as_the_prompts() -> None:
    series = pd.Series(["one", "two"], name="question", index=[10, 20])
    result = await run(series)
    assert list(result.columns[:2]) == ["question", "response"]
    assert list(result.index) == [10, 20]
    assert (result["status"] == "ok").all()


async def test_template_system_and_per_row_columns() -> None:
    df = pd.DataFrame(
        {
            "title": ["Great kettle", "Bad lamp"],
            "body": ["I love it", "It broke"],
            "who": ["Be brief.", None],
            "m": ["demo-a", None],
        }
    )
    result = await run(
        df, template="Classify sentiment: {title}. {body}", system_col="who", model_col="m"
    )
    assert result["response"].tolist() == ["positive", "negative"]
    assert result["model"].tolist() == ["demo-a", "demo"]  # None means the run's model
    report = kit.report(result)
    assert report.summary()["requests"] == 2


async def test_template_naming_a_missing_column_fails_before_any_call() -> None:
    df = pd.DataFrame({"title": ["a"], "body": ["b"]})
    with pytest.raises(kit.ConfigError, match=r"no column 'bdy'.*'title', 'body'.*'body'"):
        await run(df, template="{title} {bdy}")


async def test_missing_prompt_column_lists_the_columns() -> None:
    df = pd.DataFrame({"question": ["a"]})
    with pytest.raises(kit.ConfigError, match=r"no column 'prompt'.*\['question'\]"):
        await run(df, "prompt")


async def test_empty_and_missing_prompts_are_skipped() -> None:
    df = pd.DataFrame({"prompt": ["real", "", "   ", None, np.nan, pd.NA]}, dtype=object)
    result = await run(df, "prompt")
    assert result["status"].tolist() == ["ok"] + ["skipped"] * 5
    assert result["attempts"].tolist() == [1, 0, 0, 0, 0, 0]


async def test_a_template_that_does_not_fit_a_row_fails_only_that_row() -> None:
    df = pd.DataFrame({"price": [1.5, "n/a", 3]}, dtype=object)
    result = await run(df, template="Cost: {price:.2f}")
    assert result["status"].tolist() == ["ok", "error", "ok"]
    assert result["error_type"].iloc[1] == "invalid_input"
    assert "does not fit this row" in result["error"].iloc[1]


async def test_template_with_an_empty_field_skips_the_row() -> None:
    df = pd.DataFrame({"a": ["x", None]})
    result = await run(df, template="Say {a}")
    assert result["status"].tolist() == ["ok", "skipped"]
    assert result["error"].iloc[1] == "template field 'a' is empty"


async def test_numbers_are_sent_as_text_and_objects_fail_their_row() -> None:
    df = pd.DataFrame({"prompt": [42, 3.5, True, ["a", "list"], {"a": 1}]}, dtype=object)
    result = await run(df, "prompt")
    assert result["status"].tolist() == ["ok", "ok", "ok", "error", "error"]
    assert result["response"].iloc[0] == "[demo] You asked: 42"
    assert set(result["error_type"].iloc[3:]) == {"invalid_input"}
    assert "messages_col" in result["error"].iloc[3]


async def test_text_that_cannot_be_encoded_fails_only_its_row() -> None:
    df = pd.DataFrame({"prompt": ["fine", "broken \ud800 surrogate", "also fine"]})
    result = await run(df, "prompt")
    assert result["status"].tolist() == ["ok", "error", "ok"]
    assert result["error_type"].iloc[1] == "invalid_input"


async def test_messages_column_with_lists_and_json() -> None:
    chat = [{"role": "system", "content": "terse"}, {"role": "user", "content": "hi there"}]
    df = pd.DataFrame(
        {"msgs": [chat, '[{"role": "user", "content": "from json"}]', "not json", []]}
    )
    result = await run(df, messages_col="msgs")
    assert result["status"].tolist() == ["ok", "ok", "error", "skipped"]
    assert result["response"].iloc[1] == "[demo] You asked: from json"


async def test_exactly_one_prompt_source_is_required() -> None:
    df = pd.DataFrame({"p": ["a"]})
    with pytest.raises(kit.ConfigError, match="exactly one"):
        await run(df)
    with pytest.raises(kit.ConfigError, match="exactly one"):
        await run(df, "p", template="{p}")


async def test_clashing_user_column_is_never_overwritten() -> None:
    df = pd.DataFrame({"prompt": ["a"], "status": ["my own data"]})
    with pytest.raises(kit.ConfigError, match=r"\['status'\].*rename"):
        await run(df, "prompt")
    result = await run(df.rename(columns={"status": "state"}), "prompt")
    assert result["state"].iloc[0] == "my own data"


async def test_a_result_frame_can_be_run_again() -> None:
    df = pd.DataFrame({"prompt": ["a", "b"]})
    first = await run(df, "prompt")
    second = await run(first, "prompt")
    assert list(second.columns) == list(first.columns)
    stripped = first.copy()
    stripped.attrs = {}  # attrs lost: the kit's columns are still recognised
    third = await run(stripped, "prompt")
    assert list(third.columns) == list(first.columns)


async def test_empty_frame_gives_empty_frame_with_columns() -> None:
    df = pd.DataFrame({"prompt": pd.Series([], dtype="str")})
    result = await run(df, "prompt")
    assert len(result) == 0
    assert list(result.columns) == ["prompt", "response", *STATUS_COLUMNS]


async def test_limit_runs_a_preview_of_the_first_rows() -> None:
    df = pd.DataFrame({"prompt": [f"p{i}" for i in range(10)]})
    result = await run(df, "prompt", limit=3)
    assert len(result) == 3
    assert result["prompt"].tolist() == ["p0", "p1", "p2"]


async def test_pandas_types_of_the_added_columns() -> None:
    df = pd.DataFrame({"prompt": ["a", None]})
    result = await run(df, "prompt")
    assert result["attempts"].dtype == "Int64"
    assert result["latency_s"].dtype == "Float64"
    assert result["input_tokens"].dtype == "Int64"
    assert result["response"].dtype == "string"
    assert result["response"].iloc[1] is pd.NA
    assert result["status"].eq("ok").tolist() == [True, False]


async def test_attrs_are_small_and_describe_the_run() -> None:
    df = pd.DataFrame({"prompt": ["a", "b", None]})
    result = await run(df, "prompt", temperature=0.2, max_tokens=50)
    meta = result.attrs["notebook_kit"]
    assert meta["provider"] == "demo"
    assert meta["params"] == {"temperature": 0.2, "max_tokens": 50}
    assert meta["counts"] == {"ok": 2, "skipped": 1}
    assert meta["requests"] == 2
    assert len(repr(meta)) < 2000
    attempts = kit.report(result).attempts()
    assert list(attempts.columns) == ["row", "attempt", "start_s", "end_s", "outcome"]
    assert len(attempts) == 2


async def test_a_typo_in_an_option_is_caught() -> None:
    df = pd.DataFrame({"prompt": ["a"]})
    with pytest.raises(kit.ConfigError, match="did you mean concurrency"):
        await run(df, "prompt", concurency=4)


async def test_retry_failed_reruns_only_failed_rows_and_adds_attempts() -> None:
    flaky = kit.DemoProvider(latency=0.0, error_rate=0.5, seed=3)
    df = pd.DataFrame({"prompt": [f"row {i}" for i in range(40)]})
    first = await run(df, "prompt", provider=flaky, max_attempts=1)
    failed = first["status"] != "ok"
    assert 0 < failed.sum() < 40
    ok_before = first[~failed].copy()
    flaky.error_rate = 0.0
    fixed = await kit.retry_failed(first, progress=False)
    assert (fixed["status"] == "ok").all()
    pd.testing.assert_frame_equal(fixed[~failed], ok_before, check_like=False)
    assert (fixed.loc[failed.to_numpy(), "attempts"] == 2).all()
    assert fixed.attrs["notebook_kit"]["counts"] == {"ok": 40}
    assert fixed.attrs["notebook_kit"]["retried_rows"] == failed.sum()


async def test_retry_failed_can_pick_error_types() -> None:
    df = pd.DataFrame({"prompt": ["fine", ["bad"]]}, dtype=object)
    first = await run(df, "prompt")
    same = await kit.retry_failed(first, only=["rate_limit"], progress=False)
    pd.testing.assert_frame_equal(same, first)
    with pytest.raises(kit.ConfigError, match="unknown error type"):
        await kit.retry_failed(first, only=["ratelimit"])
