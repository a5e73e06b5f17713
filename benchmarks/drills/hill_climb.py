"""Hill-climbing an auditor's score bands with real SFace embeddings (issue 24, finding 5).

An auditor of a site with `--auditor-score-bands` and `--allow-face-embeddings` sends 128-D SFace
embeddings as Verify probes against one enrolled person, starting from another person's real
embedding, and keeps a random step whenever the band it gets back does not fall (a (1+1) climb
with a shrinking step, the red team's method). Everything runs through the service's core in
process (`vault.core.Vault`: the match index, normalisation, the limiter over the SQLite store's
attempts, the audit trail); only the transport is left out.

People are real: the SFace embeddings of ../shared/data faces (`benchmarks.features.load(...,
extractor="sface")`, cached). The gallery is LFW's first photo of `--crowd` people plus the targets'
first photos; each target's second photo is its genuine probe (it must MATCH, or the target is
skipped). The climber starts from the first photo of an LFW person who is not enrolled.

Per target, five climbs:

- `budget in force`: the rules now (bands only with a MATCH; every NO_MATCH spent from the per-
  subject and per-client budgets; default limits). Calls admitted before the limiter refuses.
- `deciles on every answer`, budget lifted: the band the service returned before issue 24 for
  NO_MATCH too, by the same formula (`int(score * 10) + 1`, clipped to 1-10, of the best score,
  computed here from the service's own match index). Scores are cohort-normalised now (impostors
  about 0-2, the threshold about 4): the band is 10 from a score of 0.9 up, far below a MATCH.
- `deciles of the way to the threshold`, budget lifted: a band that does carry a gradient, the
  decile of score / threshold (the profile's 1:1 threshold): what informative bands would buy.
- `band only with a MATCH`, budget lifted: what `Vault.verify` answers now. Before the first MATCH
  every answer is NO_MATCH with no band, so the climber has accept/reject only and walks blind.
- `dictionary of real faces`, budget lifted: another accept/reject attack, every real SFace
  embedding of the other face sets (ORL, JAFFE, CASIA-FaceV5, Korean, LFW people not enrolled)
  sent once, in a random order.

    uv run python -m benchmarks.drills.hill_climb --targets 6 --max-calls 10000 \\
        --report benchmarks/results/hill_climb.md
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks import data, features
from vault.access.auth import AUDITOR, Identity
from vault.core import FACE_EMBEDDING, Sample, Vault
from vault.custody.keys import LocalKeyFile
from vault.access.lockout import FailureLimiter, Limits, LockedOut
from vault.templates.profiles import CURRENT, FACE
from vault.custody.shredding import ledger_path, open_ledger
from vault.store import open_store

TENANT = "default"
ENROLLER = Identity(TENANT, frozenset({"enroller"}), "hr")
LIFTED = Limits(per_subject=10**9, per_client=10**9)
IN_FORCE = "budget in force"
DECILES = "deciles on every answer"
NOW = "band only with a MATCH"
GRADIENT = "deciles of the way to the threshold"
DICTIONARY = "dictionary of real faces"
POLICIES = (IN_FORCE, DECILES, GRADIENT, NOW, DICTIONARY)


def auditor(name: str) -> Identity:
    return Identity(TENANT, frozenset({AUDITOR}), name)


def embedding(vector: np.ndarray) -> Sample:
    return Sample(FACE_EMBEDDING, tuple(float(v) for v in vector))


def faces(name: str) -> tuple[list[str], np.ndarray]:
    """(subject per photo, unit SFace embedding per photo) of a face set, photos SFace found a face in."""
    loaded = features.load(data.FACE_SETS[name](), extractor="sface", progress=False)
    subjects = [f"{name}/{s.subject}" for s, ok in zip(loaded.dataset.samples, loaded.ok) if ok]
    vectors = loaded.vectors[loaded.ok].astype(np.float64)
    return subjects, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def people(subjects: list[str], vectors: np.ndarray) -> dict[str, np.ndarray]:
    by_person = defaultdict(list)
    for subject, vector in zip(subjects, vectors):
        by_person[subject].append(vector)
    return {subject: np.stack(v) for subject, v in by_person.items()}


class Climber:
    """Verify calls of one auditor client against one subject, counted."""

    def __init__(self, vault: Vault, client: str, subject: str, deciles: str = ""):
        """deciles: "" (what the service answers), DECILES or GRADIENT (bands for NO_MATCH too)."""
        self.vault, self.caller, self.subject, self.deciles = vault, auditor(client), subject, deciles
        self.calls = self.bands = 0

    async def ask(self, x: np.ndarray) -> tuple[bool, int]:
        """(matched, band). Raises LockedOut when the limiter refuses the call."""
        answer = await self.vault.verify(self.caller, embedding(x), subject_id=self.subject, modality=FACE)
        self.calls += 1
        self.bands += answer.score_band > 0
        if answer.matched or not self.deciles:
            return answer.matched, answer.score_band
        # A band for NO_MATCH too, from the service's own match index.
        codes = self.vault._probe_codes(TENANT, {CURRENT[FACE].features: x / np.linalg.norm(x)})
        _, best = self.vault.index.verify(TENANT, FACE, codes, subject_id=self.subject)
        scale = 1.0 if self.deciles == DECILES else CURRENT[FACE].threshold_for(1)
        return False, max(1, min(10, int(best / scale * 10) + 1))


async def climb(climber: Climber, start: np.ndarray, max_calls: int, rng: np.random.Generator) -> int | None:
    """The red team's (1+1) climb on the bands: calls to MATCH, None if not within max_calls."""
    x = start
    matched, band = await climber.ask(x)
    if matched:
        return climber.calls
    step = 0.5
    while climber.calls < max_calls:
        candidate = x + step * rng.standard_normal(x.size) / np.sqrt(x.size)
        candidate /= np.linalg.norm(candidate)
        matched, got = await climber.ask(candidate)
        if matched:
            return climber.calls
        if got >= band and (got > band or rng.random() < 0.5):
            x, band = candidate, got
        else:
            step = max(0.05, step * 0.98)
    return None


async def dictionary(climber: Climber, probes: np.ndarray, max_calls: int) -> int | None:
    for vector in probes[:max_calls]:
        if (await climber.ask(vector))[0]:
            return climber.calls
    return None


async def run(targets: int, crowd: int, max_calls: int, seed: int, log=print) -> dict:
    rng = np.random.default_rng(seed)
    lfw = people(*faces("lfw"))
    names = sorted(lfw)
    rng.shuffle(names)
    crowd_names = names[:crowd]
    candidates = [n for n in names[crowd:crowd + 3 * targets] if len(lfw[n]) >= 2]
    starts = names[crowd + 3 * targets:]  # never enrolled
    others = [v for name in ("orl", "jaffe", "casia_face_v5", "kpop") for v in faces(name)[1]]
    others = np.stack(others + [v for n in starts for v in lfw[n]])
    rows, skipped = [], []
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as folder:
        keys = LocalKeyFile(Path(folder) / "keys" / "keys.json")
        store = open_store(f"sqlite:///{Path(folder) / 'vault.db'}", keys.audit_key())
        ledger = open_ledger(ledger_path(keys.path), keys)
        vault = Vault(store, keys, extractor=None, allow_face_embeddings=True, auditor_score_bands=True,
                      shreds=ledger)
        in_force = FailureLimiter(store, Limits())
        lifted = FailureLimiter(store, LIFTED)
        for n, name in enumerate(crowd_names):  # a gallery to normalise against, as a site has
            await vault.enroll(ENROLLER, f"crowd-{n}", FACE, 0, [embedding(lfw[name][0])])
        chosen = []
        for name in candidates:
            if len(chosen) == targets:
                break
            subject = f"target-{len(chosen)}"
            await vault.enroll(ENROLLER, subject, FACE, 0, [embedding(lfw[name][0])])
            vault.limiter = lifted
            genuine = (await vault.verify(auditor("genuine-check"), embedding(lfw[name][1]), subject_id=subject,
                                          modality=FACE)).matched
            if not genuine:  # a target whose own second photo fails tells nothing about climbing
                skipped.append(subject)
                continue
            chosen.append((subject, name))
        log(f"gallery: {crowd} + {len(chosen) + len(skipped)} enrolled; {len(skipped)} target(s) skipped "
            f"(second photo did not match)")
        for number, (subject, name) in enumerate(chosen):
            start = lfw[starts[number % len(starts)]][0]
            for policy in POLICIES:
                climber = Climber(vault, f"auditor-{number}-{POLICIES.index(policy)}", subject,
                                  deciles=policy if policy in (DECILES, GRADIENT) else "")
                vault.limiter = in_force if policy == IN_FORCE else lifted
                started = time.perf_counter()
                calls, stopped = None, ""
                try:
                    if policy == DICTIONARY:
                        order = np.random.default_rng(seed + number).permutation(len(others))
                        calls = await dictionary(climber, others[order], max_calls)
                    else:
                        calls = await climb(climber, start, max_calls, np.random.default_rng(seed + number))
                except LockedOut:
                    stopped = "locked out"
                seconds = time.perf_counter() - started
                cap = len(others) if policy == DICTIONARY else max_calls
                rows.append({"target": subject, "policy": policy, "calls_to_match": calls, "calls": climber.calls,
                             "bands": climber.bands, "stopped": stopped or ("" if calls else f"none in {min(cap, max_calls)}"),
                             "seconds": seconds, "start_cosine": float(start @ lfw[name][0])})
                log(f"{subject} {policy}: {calls or '-'} calls to MATCH ({climber.calls} made, {climber.bands} bands; "
                    f"{stopped or 'not stopped'}) {seconds:.1f} s")
        store.close()
        ledger.close()
    return {"rows": rows, "crowd": crowd, "max_calls": max_calls, "dictionary": len(others), "seed": seed,
            "skipped": skipped}


def report(result: dict, command: str, limits: Limits = Limits()) -> str:
    rows, max_calls = result["rows"], result["max_calls"]
    # Against one subject a client gets per_subject NO_MATCHes, then a lockout: at best per_subject
    # calls every window (the failures age out) plus the lockout.
    per_hour = limits.per_subject * 3600 / (limits.window_s + limits.lockout_s)
    lines = ["# Hill-climbing an auditor's score bands with real SFace embeddings (issue 24, finding 5)", "",
             f"`{command}` (method: the module's docstring). Gallery: {result['crowd']} LFW people and the targets "
             f"(one real SFace embedding each, LFW first photo); each climb starts from a real embedding of an LFW "
             f"person not enrolled; at most {max_calls} calls a climb with the budget lifted; the dictionary is "
             f"{result['dictionary']} real embeddings of other people. Seed {result['seed']}.", "",
             "| target | start cosine | policy | calls to MATCH | calls made | bands returned | stopped by |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['target']} | {row['start_cosine']:.2f} | {row['policy']} | {row['calls_to_match'] or '-'} "
                     f"| {row['calls']} | {row['bands']} | {row['stopped'] or 'MATCH'} |")
    lines.append("")
    for policy in POLICIES:
        mine = [r for r in rows if r["policy"] == policy]
        done = [r["calls_to_match"] for r in mine if r["calls_to_match"]]
        made = [r["calls"] for r in mine]
        summary = (f"{len(done)} of {len(mine)} reached MATCH" + (f" (median {int(np.median(done))} calls, "
                   f"{min(done)}-{max(done)})" if done else "") + f"; calls made {min(made)}-{max(made)}")
        lines.append(f"- **{policy}**: {summary}.")
    lines += ["", f"At the default budget (per client and subject {limits.per_subject} NO_MATCHes in "
              f"{limits.window_s / 60:.0f} min, then a {limits.lockout_s / 60:.0f}-minute lockout; per client "
              f"{limits.per_client} informative answers in {limits.window_s / 60:.0f} min) a climb against one "
              f"person gets at most about {per_hour:.0f} calls an hour, each audited, and every lockout is "
              f"audited too: {max_calls} blind calls would take about {max_calls / per_hour:.0f} hours."]
    if result["skipped"]:
        lines.append(f"Skipped targets (own second photo did not match): {', '.join(result['skipped'])}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=6)
    parser.add_argument("--crowd", type=int, default=100, help="LFW people enrolled besides the targets")
    parser.add_argument("--max-calls", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args.targets, args.crowd, args.max_calls, args.seed))
    command = (f"uv run python -m benchmarks.drills.hill_climb --targets {args.targets} --crowd {args.crowd} "
               f"--max-calls {args.max_calls} --seed {args.seed}")
    text = report(result, command)
    print(text)
    if args.report:
        args.report.write_text(text)


if __name__ == "__main__":
    main()
