"""The feedback loop on loopback: simulated users answer the real `recsys serve`, and the pipeline trains on what
they did.

    make bench-feedback-loop   (BENCH_ARGS='--loops 4 --rounds 3000')

The users are those of the synthetic `tiny` data set, each starting from their logged history. What they click
follows the generator's planted preferences (``data.synthetic.PlantedPreferences``) under a position-based click
model: the item at position j of a slate is clicked with probability ``j ** -position_bias × min(1, attraction ×
P(it is the user's next item))``, each position independently. A clicked item becomes the user's newest; a user who
clicks nothing moves on all the same, to an item drawn from what they want next (found elsewhere, never posted).

Loop 0 trains a first model on the log alone (no pre-training, ``epochs`` of fine-tuning) and promotes it. Every loop
then:

1. serves the champion with `recsys serve` (epsilon-greedy; every slate logged to the feedback store);
2. plays ``rounds`` slates (a user drawn at random, k items), posting each click to ``/v1/feedback``;
3. runs the pipeline, trained as the first model (``training_mode`` auto: adapting the champion to the events after
   its watermark, the clicks; retrain: from scratch) on the synthetic log plus the serving log of the last
   ``feedback_days`` (0: the control, which reads none); evaluate estimates the challenger's and the champion's
   click-through on the logged slates, and the gate decides.

After each run the challenger is served under its own alias, and every logged context (user, history) of the window
is replayed against it: the exact expected click-through of the policy's slates (the click probabilities of its
greedy slate and the mean over its candidates for an explored one, no draw) is the truth its off-policy estimates
are compared with. Last, a deliberately worse policy: a model trained on another seed's log, whose planted
transitions are other ones, with a ranking head that learns from the passed-over items. The offline gates are opened
wide for it, so only the logged slates can stop it.

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
import typer

from benchmarks.common import Server, command, console, machine, show_progress, write_results
from recsys_tasks.constants import CHALLENGER_ALIAS, CHAMPION_ALIAS
from recsys_tasks.data.synthetic import PlantedPreferences, SyntheticConfig, generate

# Every run of the loop: the synthetic log (plus, in the loop, the serving log), a tiny model without pre-training.
MODEL = {"synthetic_size": "tiny", "model_size": "tiny", "max_length": 20, "pretrain_epochs": 0}
# The loop plays days of traffic in minutes: all of its clicks fall on one day, many times the log's busiest, which the
# drift check's daily-volume limit (3×) would take for a broken feed.
LOOP_DRIFT = {"max_daily_volume_ratio": 100.0}
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

    def move_on(self, user: int, clicked: list[int], rng: np.random.Generator) -> None:
        """The user's next item: the first they clicked, or, without a click, one they found elsewhere (drawn from
        what they want next, never one they had): a user who ignores a slate does not stand still."""
        history = self.histories[user]
        if clicked:
            history.append(clicked[0])
            return
        wanted = self.planted.next_item(user, history[-1])
        wanted[np.asarray(history) - 1] = 0.0
        history.append(int(rng.choice(len(wanted), p=wanted / wanted.sum())) + 1)

    def click_probabilities(self, user: int, history: list[int], items: list[int]) -> np.ndarray:
        """P(click) of each item of a slate shown in this order after ``history``."""
        wanted = self.planted.next_item(user, history[-1])[np.asarray(items) - 1]
        examined = np.arange(1, len(items) + 1, dtype=float) ** -self.position_bias
        return examined * np.minimum(1.0, self.attraction * wanted)


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


def play(server_url: str, users: ClickModel, rounds: int, k: int, rng: np.random.Generator) -> PlayedRounds:
    """``rounds`` slates for users drawn at random; clicks are posted; every user moves on after their slate."""
    played = PlayedRounds()
    with httpx.Client(base_url=server_url, timeout=60) as client:
        for first in range(0, rounds, USERS_PER_REQUEST):
            drawn = rng.choice(sorted(users.histories), size=min(USERS_PER_REQUEST, rounds - first))
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
                users.move_on(user, clicked, rng)
            if events:
                _post(client, "/v1/feedback", {"events": events})
    return played


def true_click_through(
    server_url: str, users: ClickModel, contexts: list[LoggedContext], k: int, exploration: float, candidates: int
) -> float:
    """Expected clicks per shown item of the served model under epsilon-greedy, exactly, on ``contexts``.

    The server must serve greedily (it ranks; the policy's randomness is taken in expectation here): with
    probability 1 − ε the slate is its top k; with ε, k of its top ``candidates`` in random order, so that each
    position holds each candidate alike.
    """
    value = 0.0
    with httpx.Client(base_url=server_url, timeout=60) as client:
        for first in range(0, len(contexts), USERS_PER_REQUEST):
            batch = contexts[first : first + USERS_PER_REQUEST]
            requests = [{"user_id": str(c.user), "history": c.history, "k": candidates} for c in batch]
            answer = _post(client, "/v1/recommendations", {"users": requests, "ignore_unknown": True})
            for context, slate in zip(batch, answer["recommendations"], strict=True):
                ranked = [item["item_id"] for item in slate["items"]]
                wanted = np.minimum(1.0, users.attraction * users.planted.next_item(context.user, context.history[-1]))
                examined = np.arange(1, k + 1, dtype=float) ** -users.position_bias
                greedy = wanted[np.asarray(ranked[:k]) - 1]
                explored = wanted[np.asarray(ranked) - 1].mean()
                value += float(examined @ ((1 - exploration) * greedy + exploration * explored)) / k
    return value / max(len(contexts), 1)


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
    worse_policy: bool = True,
) -> dict:
    """The whole experiment; its results as one JSON-able dict."""
    config = {
        "training_mode": training_mode,
        "epochs": epochs,
        "k": k,
        "exploration": exploration,
        "candidates": 20,
        "changed_topics": changed_topics,
        "feedback_days": feedback_days,
        "rounds": rounds,
    }
    users, rng = ClickModel.of(changed_topics), np.random.default_rng(seed)
    first_model = {**MODEL, "finetune_epochs": epochs}
    loop_params = {
        **first_model,
        "training_mode": training_mode,
        "feedback": {"days": feedback_days},
        "drift": LOOP_DRIFT,
        "off_policy_min_slates": min_slates,
    }
    console.rule("loop 0: the first model, from the synthetic log alone")
    runs = [_pipeline(home, first_model, "loop-0")]
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
            played = play(server.url, users, rounds, k, rng)
            time.sleep(1.0)  # the last slates and clicks reach the store (flushed every 0.2 s)
        served.append({"loop": loop, "champion_version": version, **played.as_dict()})
        contexts += played.contexts
        console.print(f"loop {loop}: champion v{version}, click-through {served[-1]['click_through']:.4f}")
        if loop == loops:
            break
        console.rule(f"loop {loop + 1}: training on the synthetic log and the serving log")
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
        + (f"{config['feedback_days']} day(s) of the serving log" if config["feedback_days"] else "no serving log")
        + f"; {machine()}.",
        "",
        "Click-through served in each loop (clicks per shown item; expected: the click model's probabilities):",
        "",
        "| loop | champion | slates | click-through | expected |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['loop']} | v{row['champion_version']} | {row['slates']} | {row['click_through']:.4f} | "
        f"{row['expected_click_through']:.4f} |"
        for row in result["served"]
    ]
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
    exploration: Annotated[float, typer.Option(min=0.0, max=1.0, help="ε of the serving policy.")] = 0.2,
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
    epochs: Annotated[int, typer.Option(min=1, help="Fine-tuning epochs of every run.")] = 3,
    name: Annotated[str, typer.Option(help="Results file name under benchmarks/results/.")] = "feedback-loop",
    worse_policy: Annotated[bool, typer.Option(help="End with the worse policy and the gate's verdict on it.")] = True,
    keep: Annotated[bool, typer.Option(help="Keep the home (models, serving log) for inspection.")] = False,
) -> None:
    """Run the loop and write benchmarks/results/feedback-loop.{json,md}."""
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
