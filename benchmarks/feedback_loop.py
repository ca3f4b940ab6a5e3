"""The feedback loop on loopback: simulated users answer the real `recsys serve`, and the pipeline trains on what
they did.

    make bench-feedback-loop   (BENCH_ARGS='--loops 4 --rounds 3000')

The users are those of the synthetic `tiny` data set, each starting from their logged history. What they click
follows the generator's planted preferences (``data.synthetic.PlantedPreferences``) under a position-based click
model: the item at position j of a slate is clicked with probability ``j ** -position_bias × min(1, attraction ×
P(it is the user's next item))``, each position independently. The clicked items become the user's newest; a user who
clicks nothing moves on all the same, to an item drawn from what they want next, found elsewhere (search, browsing):
not feedback on a slate, but, with ``site_events`` (the default), an event of the site's own log, which is the runs'
data source (the synthetic log and these events; ``--no-site-events``: the synthetic log alone).

Loop 0 trains a first model on the log alone (no pre-training, ``epochs`` of fine-tuning), promotes it and names it
``first-model`` in the registry. Every loop then:

1. serves the champion with `recsys serve` (epsilon-greedy; every slate logged to the feedback store);
2. plays ``rounds`` slates (a user drawn at random, k items), posting each click to ``/v1/feedback``;
3. runs the pipeline, trained as the first model (``training_mode`` auto: adapting the champion to the events after
   its watermark, or retraining when the plan says so; retrain: from scratch) on the site's log plus the serving log
   of the last ``feedback_days`` (0: the control, which reads none); evaluate estimates the challenger's and the
   champion's click-through on the logged slates, and the gate decides.

After each loop the champion and the first model are replayed on that loop's contexts: whether the served model
beats the first one where users are now (the served click-through alone also moves with where users are). Around
each run the champion and the challenger are served under their aliases, and every logged context (user, history)
of the window is replayed against them: the exact expected click-through of the policy's slates (the click
probabilities of its greedy slate and the mean over its candidates for an explored one, no draw) is the truth the
off-policy estimates are compared with. Last, a deliberately worse policy: a model trained on another seed's log,
whose planted transitions are other ones, with a ranking head that learns from the passed-over items. The offline
gates are opened wide for it, so only the logged slates can stop it. The loop runs' off-policy check tolerates a
paired drop of ``max_off_policy_regression`` (0.5 here, 0.05 in the product): on a few thousand slates the paired
interval of a model that differs from the champion is about ±25% of the value wide.

Writes benchmarks/results/feedback-loop.{json,md} and the table of the study tagged ``bench-feedback-loop``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import typer

from benchmarks.common import Server, command, console, machine, show_progress, write_results
from recsys_tasks.constants import CHALLENGER_ALIAS, CHAMPION_ALIAS
from recsys_tasks.data.synthetic import PlantedPreferences, SyntheticConfig, generate

# Every run of the loop: the synthetic log (plus, in the loop, the serving log), a tiny model without pre-training.
MODEL = {"synthetic_size": "tiny", "model_size": "tiny", "max_length": 20, "pretrain_epochs": 0}
# The loop plays weeks of traffic in minutes: all of its events fall on one day, many times the log's busiest, which the
# drift check's daily-volume limit (3×) would take for a broken feed, and each loop adds about as many events to a
# user's history as the log holds, a shift in the history lengths far past the check's limit (PSI 0.25).
LOOP_DRIFT = {"max_daily_volume_ratio": 100.0, "max_history_length_psi": 100.0}
# The worse policy: another seed's log alone (its own test split flatters it), offline gates opened wide; only the
# serving log, which evaluate reads whatever the feedback Param, can tell.
WORSE_RUN = {
    **MODEL,
    "seed": 1,
    "finetune_epochs": 3,
    "training_mode": "retrain",
    "ranking_weight": 0.5,
    "min_ndcg_at_10": 0.0,
    "min_lift_over_popularity": 0.0,
    "max_regression_vs_champion": 1.0,
}
HISTORY_SENT = 20
# The registry alias the loop gives the first model, to replay every loop's contexts against it.
FIRST_MODEL_ALIAS = "first-model"
USERS_PER_REQUEST = 50


@dataclass
class ClickModel:
    """Simulated users: the planted next-item preferences of a synthetic data set, behind a position bias."""

    planted: PlantedPreferences
    histories: dict[int, list[int]]
    attraction: float = 1.25
    position_bias: float = 0.5

    @classmethod
    def of(cls, changed_topics: int = 0, preset: str = "tiny", seed: int = 0) -> ClickModel:
        """The users of a synthetic preset with their logged histories; in ``changed_topics`` topics they now move
        from item to item in another order than the log shows."""
        config = SyntheticConfig.preset(preset, seed=seed)
        interactions, _ = generate(config)
        histories: dict[int, list[int]] = {}
        for user, item in zip(interactions["user_id"].to_pylist(), interactions["item_id"].to_pylist(), strict=True):
            histories.setdefault(int(user), []).append(item)
        return cls(PlantedPreferences(config, changed_topics), histories)

    def move_on(self, user: int, clicked: list[int], rng: np.random.Generator) -> int | None:
        """The user's next items: those they clicked, in the slate's order, or, without a click, one they found
        elsewhere (drawn from what they want next, never one they had): a user who ignores a slate does not stand
        still. Returns the item found elsewhere, None after a click."""
        history = self.histories[user]
        if clicked:
            history.extend(clicked)
            return None
        wanted = self.planted.next_item(user, history[-1])
        wanted[np.asarray(history) - 1] = 0.0
        history.append(int(rng.choice(len(wanted), p=wanted / wanted.sum())) + 1)
        return history[-1]

    def slate_value(self, user: int, history: list[int], ranked: list[int], k: int, exploration: float) -> float:
        """Expected clicks per shown item after ``history`` under epsilon-greedy over ``ranked``: with probability
        1 − ε its top k; with ε, k of all of it in random order, so that each position holds each item alike."""
        wanted = np.minimum(1.0, self.attraction * self.planted.next_item(user, history[-1]))
        examined = np.arange(1, k + 1, dtype=float) ** -self.position_bias
        greedy = wanted[np.asarray(ranked[:k]) - 1]
        explored = wanted[np.asarray(ranked) - 1].mean()
        return float(examined @ ((1 - exploration) * greedy + exploration * explored)) / k

    def click_probabilities(self, user: int, history: list[int], items: list[int]) -> np.ndarray:
        """P(click) of each item of a slate shown in this order after ``history``."""
        wanted = self.planted.next_item(user, history[-1])[np.asarray(items) - 1]
        examined = np.arange(1, len(items) + 1, dtype=float) ** -self.position_bias
        return examined * np.minimum(1.0, self.attraction * wanted)


@dataclass
class SiteLog:
    """The site's own event log, the loop's data source: the synthetic log, then every item a user found elsewhere
    (search, browsing) as they moved on, rated as the generator rates. Rewritten whole after each loop."""

    path: Path
    log: pa.Table
    items: pa.Table
    # Its own stream, so that the users' draws are the same with a site log and without.
    ratings: np.random.Generator
    found: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, path: Path, preset: str = "tiny", seed: int = 0) -> SiteLog:
        interactions, items = generate(SyntheticConfig.preset(preset, seed=seed))
        return cls(path, interactions, items, np.random.default_rng([seed, 1]))

    def record(self, users: ClickModel, user: int, item: int) -> None:
        rating = users.planted.rating(user, item, self.ratings)
        self.found.append({"user_id": str(user), "item_id": item, "timestamp": int(time.time()), "rating": rating})

    def write(self) -> None:
        rows = pa.concat_tables([self.log, pa.Table.from_pylist(self.found, schema=self.log.schema)])
        attributes = dict(zip(self.items["item_id"].to_pylist(), self.items["attributes"].to_pylist(), strict=True))
        rows = rows.append_column(
            "attributes", pa.array([attributes[item] for item in rows["item_id"].to_pylist()], pa.list_(pa.int64()))
        )
        partial = self.path.with_suffix(".partial")
        pq.write_table(rows, partial)
        partial.replace(self.path)

    @property
    def params(self) -> dict:
        """The Params that read it: a table source, its columns as written."""
        return {"data_source": "table", "data_path": str(self.path), "column_mapping": {"attributes": "attributes"}}


@dataclass
class LoggedContext:
    user: int
    history: list[int]


@dataclass
class PlayedRounds:
    shown: int = 0
    clicks: int = 0
    expected_clicks: float = 0.0
    contexts: list[LoggedContext] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return {
            "slates": len(self.contexts),
            "shown": self.shown,
            "clicks": self.clicks,
            "click_through": self.clicks / max(self.shown, 1),
            "expected_click_through": self.expected_clicks / max(self.shown, 1),
        }


def _post(client: httpx.Client, path: str, body: dict) -> dict:
    answer = client.post(path, json=body)
    if answer.status_code >= 300:
        raise SystemExit(f"{path} answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


def play(
    server_url: str, users: ClickModel, rounds: int, k: int, rng: np.random.Generator, site: SiteLog | None = None
) -> PlayedRounds:
    """``rounds`` slates for users drawn at random; clicks are posted; every user moves on after their slate, and
    an item found elsewhere is recorded in ``site``'s log when there is one."""
    played = PlayedRounds()
    with httpx.Client(base_url=server_url, timeout=60) as client:
        for first in range(0, rounds, USERS_PER_REQUEST):
            # Each user once a request: a user is in one place at a time.
            drawn = rng.choice(sorted(users.histories), size=min(USERS_PER_REQUEST, rounds - first), replace=False)
            requests = [
                {"user_id": str(user), "history": users.histories[user][-HISTORY_SENT:], "k": k} for user in drawn
            ]
            answer = _post(client, "/v1/recommendations", {"users": requests, "ignore_unknown": True})
            events = []
            for user, request, slate in zip(drawn, requests, answer["recommendations"], strict=True):
                items = [item["item_id"] for item in slate["items"]]
                probabilities = users.click_probabilities(user, users.histories[user], items)
                clicked = [item for item, p in zip(items, probabilities, strict=True) if rng.random() < p]
                played.contexts.append(LoggedContext(int(user), request["history"]))
                played.shown += len(items)
                played.clicks += len(clicked)
                played.expected_clicks += float(probabilities.sum())
                events += [{"request_id": slate["request_id"], "item_id": item, "event": "click"} for item in clicked]
                found = users.move_on(user, clicked, rng)
                if site is not None and found is not None:
                    site.record(users, user, found)
            if events:
                _post(client, "/v1/feedback", {"events": events})
    return played


def true_click_through(
    server_url: str, users: ClickModel, contexts: list[LoggedContext], k: int, exploration: float, candidates: int
) -> float:
    """Expected clicks per shown item of the served model under epsilon-greedy over its top ``candidates``, exactly,
    on ``contexts``. The server must serve greedily: it ranks, and the policy's randomness is taken in expectation."""
    value = 0.0
    with httpx.Client(base_url=server_url, timeout=60) as client:
        for first in range(0, len(contexts), USERS_PER_REQUEST):
            batch = contexts[first : first + USERS_PER_REQUEST]
            requests = [{"user_id": str(c.user), "history": c.history, "k": candidates} for c in batch]
            answer = _post(client, "/v1/recommendations", {"users": requests, "ignore_unknown": True})
            for context, slate in zip(batch, answer["recommendations"], strict=True):
                ranked = [item["item_id"] for item in slate["items"]]
                value += users.slate_value(context.user, context.history, ranked, k, exploration)
    return value / max(len(contexts), 1)


def reference_click_through(users: ClickModel, k: int, exploration: float, candidates: int) -> dict[str, float]:
    """The true click-through, on every user's logged context, of epsilon-greedy policies that rank by what is known
    rather than learned: the users' truth (with the change), the log's truth (without it), and popularity. What the
    models of the loop are measured against."""
    before_the_change = PlantedPreferences(users.planted.config)
    scorers = {
        "the users' truth": users.planted.next_item,
        "the log's truth": before_the_change.next_item,
        "popularity": lambda user, last: users.planted.catalogue.popularity,
    }
    values = {}
    for name, score in scorers.items():
        total = 0.0
        for user, history in users.histories.items():
            scores = np.array(score(user, history[-1]), dtype=float)
            scores[np.asarray(history) - 1] = -np.inf
            ranked = (np.argsort(-scores, kind="stable")[:candidates] + 1).tolist()
            total += users.slate_value(user, history, ranked, k, exploration)
        values[name] = total / len(users.histories)
    return values


@contextmanager
def serving(home: Path, log: Path, **settings: str) -> Iterator[Server]:
    server = Server(home, 1, log, {"POLL_SECONDS": "1", "LOG_FLUSH_SECONDS": "0.2", **settings})
    try:
        yield server
    finally:
        server.stop()


def _pipeline(home: Path, params: dict, run_id: str) -> dict[str, Any]:
    """One run of the pipeline (the stages the DAG runs, in this process); the parts the loop reads."""
    from recsys_tasks.pipeline import run_pipeline
    from recsys_tasks.settings import Settings

    results = run_pipeline(params, run_id, Settings(home=home))
    evaluation, decision = results.get("evaluate") or {}, results.get("promote") or {}
    off_policy = evaluation.get("off_policy") or {}
    return {
        "run_id": run_id,
        "training_mode": (results.get("plan_training") or {}).get("mode"),
        "feedback": (results.get("ingest") or {}).get("feedback"),
        "ndcg_at_10": (evaluation.get("metrics") or {}).get("model", {}).get("ndcg_at_10"),
        "off_policy": {
            name: off_policy.get(name) for name in ("slates", "slates_used", "shown", "clicks", "logged", "estimates")
        },
        "off_policy_reason": off_policy.get("reason"),
        "promoted": decision.get("passed"),
        "version": decision.get("version"),
        "checks": {check["name"]: check for check in decision.get("checks", [])},
    }


def _name_the_first_model(home: Path, version: str) -> None:
    from recsys_tasks.contracts.tracking import connect
    from recsys_tasks.settings import Settings

    settings = Settings(home=home)
    connect(settings).set_registered_model_alias(settings.model_name, FIRST_MODEL_ALIAS, version)


def _truth(home: Path, scratch: Path, alias: str, users: ClickModel, contexts, config: dict) -> float:
    """The true click-through on ``contexts`` of the version holding ``alias``, served greedily and not logged."""
    with serving(home, scratch / f"{alias}.log", ALIAS=alias, POLICY="greedy", LOG_SLATES="false") as server:
        return true_click_through(server.url, users, contexts, config["k"], config["exploration"], config["candidates"])


def _judged(home: Path, scratch: Path, params: dict, run_id: str, users: ClickModel, contexts, config: dict) -> dict:
    """One run of the pipeline, with the true click-through of the champion it faced and of its challenger."""
    champion = _truth(home, scratch, CHAMPION_ALIAS, users, contexts, config)
    run = _pipeline(home, params, run_id)
    run["truth"] = {
        CHAMPION_ALIAS: champion,
        CHALLENGER_ALIAS: _truth(home, scratch, CHALLENGER_ALIAS, users, contexts, config),
    }
    return run


def run_loop(
    home: Path,
    scratch: Path,
    loops: int,
    rounds: int,
    k: int,
    exploration: float,
    seed: int,
    min_slates: int,
    changed_topics: int,
    feedback_days: int,
    training_mode: str,
    epochs: int,
    worse_policy: bool,
    site_events: bool,
    candidates: int,
    max_off_policy_regression: float,
) -> dict:
    """The whole experiment; its results as one JSON-able dict."""
    config = {
        "site_events": site_events,
        "training_mode": training_mode,
        "epochs": epochs,
        "k": k,
        "exploration": exploration,
        "candidates": candidates,
        "max_off_policy_regression": max_off_policy_regression,
        "changed_topics": changed_topics,
        "feedback_days": feedback_days,
        "rounds": rounds,
    }
    users, rng = ClickModel.of(changed_topics), np.random.default_rng(seed)
    site = SiteLog.of(home / "site-events.parquet") if site_events else None
    first_model = {**MODEL, "finetune_epochs": epochs, **(site.params if site else {})}
    if site:
        site.write()
    loop_params = {
        **first_model,
        "training_mode": training_mode,
        "feedback": {"days": feedback_days},
        "drift": LOOP_DRIFT,
        "off_policy_min_slates": min_slates,
        "max_off_policy_regression": max_off_policy_regression,
    }
    console.rule("loop 0: the first model, from the synthetic log alone")
    runs = [_pipeline(home, first_model, "loop-0")]
    _name_the_first_model(home, runs[0]["version"])
    served, contexts = [], []
    for loop in range(loops + 1):
        with serving(
            home,
            scratch / f"serve-{loop}.log",
            POLICY="epsilon_greedy",
            EXPLORATION=str(exploration),
            CANDIDATES=str(config["candidates"]),
        ) as server:
            version = httpx.get(f"{server.url}/readyz").json()["model"]["version"]
            played = play(server.url, users, rounds, k, rng, site)
            time.sleep(1.0)  # the last slates and clicks reach the store (flushed every 0.2 s)
        truth = {
            alias: _truth(home, scratch, alias, users, played.contexts, config)
            for alias in (CHAMPION_ALIAS, FIRST_MODEL_ALIAS)
        }
        served.append({"loop": loop, "champion_version": version, **played.as_dict(), "truth": truth})
        contexts += played.contexts
        console.print(f"loop {loop}: champion v{version}, click-through {served[-1]['click_through']:.4f}")
        if loop == loops:
            break
        if site:
            site.write()
        console.rule(f"loop {loop + 1}: training on the site's log and the serving log")
        runs.append(_judged(home, scratch, loop_params, f"loop-{loop + 1}", users, contexts, config))
    worse = None
    if worse_policy:
        console.rule("a worse policy: trained on another seed's log")
        params = {**WORSE_RUN, "off_policy_min_slates": min_slates}
        worse = _judged(home, scratch, params, "worse-policy", users, contexts, config)
    return {"config": config, "served": served, "runs": runs, "worse_policy": worse}


def _estimate_row(run: dict, estimator: str) -> str:
    estimate = ((run["off_policy"].get("estimates") or {}).get("model") or {}).get(estimator)
    if not estimate:
        return "–"
    inside = estimate["lower"] <= run["truth"][CHALLENGER_ALIAS] <= estimate["upper"]
    return f"{estimate['value']:.4f} [{estimate['lower']:.4f}, {estimate['upper']:.4f}]{' ✓' if inside else ' ✗'}"


def markdown(result: dict) -> str:
    config = result["config"]
    lines = [
        f"Simulated users of the synthetic `tiny` set, {config['changed_topics']} of 5 topics followed in another "
        f"order than the log's; {config['rounds']:,} slates a loop, k = {config['k']}, epsilon-greedy ε = "
        f"{config['exploration']} over {config['candidates']} candidates; every run fine-tunes {config['epochs']} "
        f"epochs, the loop runs with training_mode {config['training_mode']} and read "
        + (
            "the site's log (with the items users found elsewhere) and "
            if config["site_events"]
            else "the synthetic log and "
        )
        + (f"{config['feedback_days']} day(s) of the serving log" if config["feedback_days"] else "no serving log")
        + f"; the loop runs' off-policy check tolerates a paired drop of {config['max_off_policy_regression']:.0%}"
        + (" (the worse policy faces the product's default)" if result["worse_policy"] else "")
        + f"; {machine()}.",
        "",
        "Click-through served in each loop (clicks per shown item; expected: the click model's probabilities), and "
        "the true click-through on that loop's contexts of the champion and of the first model, each replayed:",
        "",
        "| loop | champion | slates | click-through | expected | champion's true | first model's true | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["served"]:
        champion, first = row["truth"][CHAMPION_ALIAS], row["truth"][FIRST_MODEL_ALIAS]
        lines.append(
            f"| {row['loop']} | v{row['champion_version']} | {row['slates']} | {row['click_through']:.4f} | "
            f"{row['expected_click_through']:.4f} | {champion:.4f} | {first:.4f} | {champion / first:.3f} |"
        )
    lines += [
        "",
        "Each run's challenger: its off-policy estimates on the logged slates (✓: the interval holds the true value), "
        "the truth measured by replaying every logged context against it, and the gate:",
        "",
        "| run | mode | feedback clicks | slates used | IPS | SNIPS | DR | true | champion's true | gate |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in [*result["runs"][1:], *([result["worse_policy"]] if result["worse_policy"] else [])]:
        check = run["checks"].get("off_policy_vs_champion")
        gate = "promoted" if run["promoted"] else "rejected"
        if check:
            gate += f" (off-policy: {'skipped' if check['skipped'] else 'passed' if check['passed'] else 'failed'})"
        feedback = (run.get("feedback") or {}).get("positives", 0)
        lines.append(
            f"| {run['run_id']} | {run['training_mode']} | {feedback} | {run['off_policy'].get('slates_used') or 0} | "
            + " | ".join(_estimate_row(run, estimator) for estimator in ("ips", "snips", "dr"))
            + f" | {run['truth'][CHALLENGER_ALIAS]:.4f} | {run['truth'][CHAMPION_ALIAS]:.4f} | {gate} |"
        )
    return "\n".join(lines) + "\n\n" + f"Command: `{command('benchmarks.feedback_loop')}`\n"


def main(
    loops: Annotated[int, typer.Option(min=1, help="Loops after the first model.")] = 4,
    rounds: Annotated[int, typer.Option(min=10, help="Slates served per loop.")] = 3000,
    k: Annotated[int, typer.Option(min=1, max=20, help="Items per slate.")] = 5,
    exploration: Annotated[float, typer.Option(min=0.0, max=1.0, help="ε of the serving policy.")] = 0.3,
    min_slates: Annotated[int, typer.Option(min=1, help="off_policy_min_slates of the gate.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the users' draws and clicks.")] = 0,
    changed_topics: Annotated[
        int, typer.Option(min=0, max=5, help="Topics (of 5) whose order users now follow differs from the log's.")
    ] = 2,
    feedback_days: Annotated[
        int, typer.Option(min=0, help="The loop runs' feedback Param; 0: the control, the serving log is not read.")
    ] = 1,
    training_mode: Annotated[
        str, typer.Option(help="The loop runs' training_mode: auto (adapts) or retrain.")
    ] = "auto",
    epochs: Annotated[int, typer.Option(min=1, help="Fine-tuning epochs of every run.")] = 30,
    name: Annotated[str, typer.Option(help="Results file name under benchmarks/results/.")] = "feedback-loop",
    worse_policy: Annotated[bool, typer.Option(help="End with the worse policy and the gate's verdict on it.")] = True,
    site_events: Annotated[
        bool, typer.Option(help="Items users find elsewhere reach the site's log, the runs' data source.")
    ] = True,
    candidates: Annotated[
        int, typer.Option(min=1, help="How many of the model's top items an explored slate draws from.")
    ] = 50,
    max_off_policy_regression: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="The loop runs' max_off_policy_regression (the gate's tolerance).")
    ] = 0.5,
    keep: Annotated[bool, typer.Option(help="Keep the home (models, serving log) for inspection.")] = False,
    references_only: Annotated[
        bool, typer.Option(help="Only print the click-through of the reference policies (no model, no server).")
    ] = False,
) -> None:
    """Run the loop and write benchmarks/results/feedback-loop.{json,md}."""
    if references_only:
        references = reference_click_through(ClickModel.of(changed_topics), k, exploration, candidates)
        console.print("\n".join(f"{name}: {value:.4f}" for name, value in references.items()))
        return
    show_progress()
    home = Path(tempfile.mkdtemp(prefix="adaptrec-feedback-loop-"))
    try:
        result = run_loop(
            home,
            home,
            loops,
            rounds,
            k,
            exploration,
            seed,
            min_slates,
            changed_topics,
            feedback_days,
            training_mode,
            epochs,
            worse_policy,
            site_events,
            candidates,
            max_off_policy_regression,
        )
        text = markdown(result)
        write_results(name, {"machine": machine(), **result}, text, f"bench-{name}")
        console.print(text)
    finally:
        if keep:
            console.print(f"home kept: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    typer.run(main)
