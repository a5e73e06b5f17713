"""The evaluation suite (ISO/IEC 24745 requirements measured as in ISO/IEC 30136): accuracy raw vs
protected, unlinkability, renewability, irreversibility and speed, face and fingerprint, on the
shared research data. Run through `python -m benchmarks` (benchmarks/__main__.py).

Every protected score is made by the service's own code: Protector.protect_many under fresh random
tenant keys (benchmarks.scores.fresh_key), and vault.templates.matching.agreement.

Keys and scenarios. All templates of a tenant share the tenant's projection key (per key version);
the per-template salt only seals the stored row. So every comparison inside a tenant is the
"stolen-key" scenario of the cancellable-biometrics literature (impostor and victim transformed
with the same key), and it is the one the service runs in. "Key secret" is the case where the
impostor's probe goes through a different key than the victim's template: another tenant's, or an
attacker's own guess.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from benchmarks.evaluation import attacks, bozorth
from benchmarks import data, features, metrics
from benchmarks.evaluation.report import Report, pct, table
from benchmarks.scores import code_matrix, fresh_key, one_to_many_ns, threshold_at_fmr
from benchmarks.evaluation.unlinkability import linkage
from vault.exceptions import IntegrityError
from vault.intake.features import fuse
from vault.custody.keys import TenantKey
from vault.templates.matching import agreement
from vault.templates.profiles import CURRENT, FACE, FINGERPRINT, ProtectionProfile
from vault.templates.protection import Protector, RowIdentity

VICTIM, ATTACKER = "victim", "attacker"


@dataclass
class Config:
    quick: bool = False
    keys: int = 3  # fresh tenant keys pooled per protected figure
    link_keys: int = 8  # key draws pooled per unlinkability figure (each is independent)
    attack_targets: int = 48
    attack_steps: int = 150
    max_nonmated: int = 200_000
    # the profiles new templates are made with
    face_profile: ProtectionProfile = field(default_factory=lambda: CURRENT[FACE])
    finger_profile: ProtectionProfile = field(default_factory=lambda: CURRENT[FINGERPRINT])
    progress: bool = True
    seed: int = 1

    @classmethod
    def for_quick(cls, **kw) -> Config:
        return cls(quick=True, keys=1, link_keys=1, attack_targets=6, attack_steps=60, max_nonmated=20_000, **kw)


@dataclass
class Set:
    label: str
    feats: features.Features
    raw: features.Features | None = None  # dlib faces: dlib's unnormalised embeddings (None for SFace)
    boz: bozorth.BozorthScores | None = None
    fvc: bool = False  # fingerprint set: FVC protocol as well as all pairs
    enrol_k: int = 2  # samples fused for multi-sample enrolment

    @property
    def subjects(self) -> np.ndarray:
        return np.array([s.subject for s in self.feats.dataset.samples])

    @property
    def face(self) -> bool:
        return self.feats.dataset.modality == "face"


def load_sets(cfg: Config) -> tuple[list[Set], list[Set]]:
    p = cfg.progress
    faces, fingers = [], []
    orl, lfw = data.orl(), data.lfw()
    extractor = cfg.face_profile.features  # "sface" (face-sface-v1) or "dlib" (face-iom-v1..v3)
    dlib = extractor == "dlib"
    if cfg.quick:
        orl_subjects = sorted({s.subject for s in orl.samples}, key=lambda n: int(n[1:]))[:15]
        lfw_subjects = sorted({s.subject for s in lfw.samples})[:60]
        for label, dataset, subjects, name, k in (("ORL (15 subjects)", orl, orl_subjects, "orl-quick", 3),
                                                  ("LFW (60 identities)", lfw, lfw_subjects, "lfw-quick", 2)):
            faces.append(Set(label, features.subset(dataset, subjects, name, progress=p, extractor=extractor),
                             features.subset(dataset, subjects, name, progress=p, raw=True) if dlib else None,
                             enrol_k=k))
        sets = [(2000, 1)]  # the smallest real images (300x300): LEADER's cost grows with pixels
    else:
        for label, dataset, k in (("ORL", orl, 3), ("LFW subset", lfw, 2)):
            faces.append(Set(label, features.load(dataset, progress=p, extractor=extractor),
                             features.load(dataset, progress=p, raw=True) if dlib else None, enrol_k=k))
        sets = [(year, db) for year in (2000, 2002) for db in (1, 2, 3, 4)]
    for year, db in sets:
        ds = data.fvc(year, db)
        fingers.append(Set(f"FVC{year} DB{db}_B{' (synthetic)' if db == 4 else ''}", features.load(ds, progress=p),
                           boz=bozorth.scores(ds, progress=p), fvc=True, enrol_k=3))
    return faces, fingers


# -- pairs and scores ------------------------------------------------------------------------------

def protocol_pairs(s: Set, protocol: str) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) index pairs (k, 2), each unordered pair once."""
    if protocol == "FVC":
        g, i = data.fvc_pairs(s.feats.dataset)
        return np.array(g), np.array(i)
    subjects = s.subjects
    a, b = np.triu_indices(len(subjects), 1)
    same = subjects[a] == subjects[b]
    return np.stack([a[same], b[same]], 1), np.stack([a[~same], b[~same]], 1)


def _usable(pairs: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return pairs[ok[pairs[:, 0]] & ok[pairs[:, 1]]]


def _take(matrix: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    return matrix[pairs[:, 0], pairs[:, 1]]


def profile_of(s: Set, cfg: Config) -> ProtectionProfile:
    return cfg.face_profile if s.face else cfg.finger_profile


def raw_system(s: Set, cfg: Config) -> str:
    """The unprotected matcher a set's protected scores are set against."""
    if not s.face:
        return "bozorth3 (NBIS)"
    return "dlib cosine" if s.raw is not None else f"{cfg.face_profile.features} cosine"


def agreement_threshold(profile: ProtectionProfile) -> float:
    """The decision threshold on the agreement scale these figures use. A normalised profile
    (face-sface-v1) decides on scores normalised against the gallery's cohort; here, as in a new
    deployment whose gallery is still small, against its prior alone: the normalised threshold t
    is agreement prior_mean + t * prior_sd."""
    norm = profile.score_norm
    if norm is None:
        return profile.threshold
    return norm.prior_mean + profile.threshold * norm.prior_sd


@dataclass
class Draw:
    """One independent draw of tenant keys, with a Protector that caches their projections."""

    protector: Protector
    v1: TenantKey  # the victim tenant's key, version 1
    v2: TenantKey  # the victim tenant's key after rotation, version 2
    attacker: TenantKey  # the attacker tenant's key, version 1


def fresh_draw() -> Draw:
    return Draw(Protector(), fresh_key(VICTIM, 1), fresh_key(VICTIM, 2), fresh_key(ATTACKER, 1))


@dataclass
class Keyed:
    """Codes of one set under `keys` fresh key draws: victim and attacker tenants, version 1."""

    draws: list[Draw]
    victim: list[np.ndarray]
    attacker: list[np.ndarray]


def keyed_codes(s: Set, cfg: Config) -> Keyed:
    profile = profile_of(s, cfg)
    draws, victim, attacker = [], [], []
    for _ in range(cfg.keys):
        d = fresh_draw()
        draws.append(d)
        victim.append(d.protector.protect_many(d.v1, profile, s.feats.vectors))
        attacker.append(d.protector.protect_many(d.attacker, profile, s.feats.vectors))
    return Keyed(draws, victim, attacker)


def system_scores(s: Set, cfg: Config, keyed: Keyed, protocol: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{system: (genuine, impostor)} on one protocol."""
    profile = profile_of(s, cfg)
    genuine, impostor = protocol_pairs(s, protocol)
    out = {}
    if s.face and s.raw is None:
        g, i = _usable(genuine, s.feats.ok), _usable(impostor, s.feats.ok)
        v = s.feats.vectors
        out[raw_system(s, cfg)] = (np.einsum("ij,ij->i", v[g[:, 0]], v[g[:, 1]]),
                                   np.einsum("ij,ij->i", v[i[:, 0]], v[i[:, 1]]))
    elif s.face:
        g, i = _usable(genuine, s.raw.ok), _usable(impostor, s.raw.ok)
        v = s.feats.vectors
        out["dlib cosine"] = (np.einsum("ij,ij->i", v[g[:, 0]], v[g[:, 1]]),
                              np.einsum("ij,ij->i", v[i[:, 0]], v[i[:, 1]]))
        r = s.raw.vectors
        out["dlib Euclidean"] = (-np.linalg.norm(r[g[:, 0]] - r[g[:, 1]], axis=1),
                                 -np.linalg.norm(r[i[:, 0]] - r[i[:, 1]], axis=1))
    else:
        g, i = _usable(genuine, s.boz.ok), _usable(impostor, s.boz.ok)
        out["bozorth3 (NBIS)"] = (s.boz.pairs(g), s.boz.pairs(i))
        g, i = _usable(genuine, s.feats.ok), _usable(impostor, s.feats.ok)
        v = s.feats.vectors
        out["vault vector, cosine"] = (np.einsum("ij,ij->i", v[g[:, 0]], v[g[:, 1]]),
                                       np.einsum("ij,ij->i", v[i[:, 0]], v[i[:, 1]]))
    g, i = _usable(genuine, s.feats.ok), _usable(impostor, s.feats.ok)
    stolen_g, stolen_i, secret_i = [], [], []
    for codes, other in zip(keyed.victim, keyed.attacker):
        same = code_matrix(codes, codes, profile.hash_count)
        stolen_g.append(_take(same, g))
        stolen_i.append(_take(same, i))
        # the impostor's probe goes through the attacker tenant's key, the template through the victim's
        cross = code_matrix(codes, other, profile.hash_count)
        secret_i.append(_take(cross, i))
    out[f"{profile.name}, key stolen (in-tenant)"] = (np.concatenate(stolen_g), np.concatenate(stolen_i))
    out[f"{profile.name}, key secret"] = (np.concatenate(stolen_g), np.concatenate(secret_i))
    return out


# -- sections ----------------------------------------------------------------------------------------

def accuracy(report: Report, sets: list[Set], cfg: Config, keyed: dict[str, Keyed], summary: dict) -> None:
    report.add("## Accuracy: raw vs protected\n")
    report.add(
        "All pairs: every unordered pair of samples (genuine: same subject). FVC: genuine = every pair of "
        "impressions of a finger, impostor = impression 1 of every pair of fingers (45 pairs: too few for "
        "FMR below 1e-2; n/a marks a rate the impostor count cannot resolve). Pairs with a failure to "
        f"extract are left out; FTE is listed. Protected figures pool {cfg.keys} fresh tenant key(s). "
        "'Key stolen (in-tenant)' is every comparison the service makes (one projection key per tenant); "
        "'key secret': the impostor's probe is transformed under another tenant's key. "
        "'@ threshold' is the service's decision at the profile's calibrated threshold. Where a curve reaches "
        "FMR 0 (typically key secret: no impostor score reaches the genuine ones, the key acting as a second "
        "factor, the optimistic figure of the literature, not the service's operating case) it is drawn at "
        "1/N, the resolution of its N impostor pairs, and marked '< 1/N'; each plot's axes start at the "
        "resolution of its pairs.\n")
    rows = []
    for s in sets:
        profile = profile_of(s, cfg)
        protocols = ["all pairs", "FVC"] if s.fvc else ["all pairs"]
        for protocol in protocols:
            systems = system_scores(s, cfg, keyed[s.label], protocol)
            for name, (g, i) in systems.items():
                r = metrics.rates(g, i)
                fte = s.boz.ok if name.startswith("bozorth") else (s.raw.ok if "Euclid" in name else s.feats.ok)
                at = ""
                if name.startswith(profile.name):
                    at = (f"{pct(np.mean(g < agreement_threshold(profile)))} / "
                          f"{np.mean(i >= agreement_threshold(profile)):.1e}")
                rows.append([s.label, protocol, name, pct(1 - fte.mean(), 1), f"{r.genuine} / {r.impostor}",
                             pct(r.eer), pct(r.fnmr[1e-2]), pct(r.fnmr[1e-3]), pct(r.fnmr[1e-4]), at])
                summary.setdefault("accuracy", {})[(s.label, protocol, name)] = r
            report.add(f"**{s.label}, {protocol}**\n\n" + report.det(f"{s.label} {protocol}", systems) + "\n")
    report.add(table(["set", "protocol", "system", "FTE", "genuine / impostor pairs", "EER", "FNMR@FMR1e-2",
                      "FNMR@FMR1e-3", "FNMR@FMR1e-4", "@ threshold: FNMR / FMR"], rows) + "\n")


def multi_sample(report: Report, sets: list[Set], cfg: Config, keyed: dict[str, Keyed]) -> None:
    report.add("## Single-sample vs multi-sample enrolment\n")
    report.add(
        "Per subject, enrolment from its first sample, or from its first k samples fused by "
        "vault.intake.features.fuse (what Enroll does with several face photos), or kept apart as k codes, a probe "
        "scoring its best agreement with any (what Enroll does with several fingerprint touches under a "
        "profile that keeps_sample_codes); probes are the remaining samples "
        "(the same probes for both). Subjects whose first k samples do not all extract are left out. "
        "Protected: key stolen (in-tenant), first key.\n")
    rows = []
    for s in sets:
        profile = profile_of(s, cfg)
        d = keyed[s.label].draws[0]
        subjects, ok, v = s.subjects, s.feats.ok, s.feats.vectors
        enrol_single, enrol_fused, owners, probes = [], [], [], []
        for subject in dict.fromkeys(subjects):
            idx = np.flatnonzero(subjects == subject)
            first = idx[:s.enrol_k]
            if not ok[first].all() or len(idx) <= s.enrol_k:
                continue
            enrol_single.append(v[first[0]])
            enrol_fused.append(fuse(list(v[first])))
            owners.append(subject)
            probes += [i for i in idx[s.enrol_k:] if ok[i]]
        probes = np.array(probes)
        same = np.array(owners)[:, None] == subjects[probes][None, :]
        probe_codes = d.protector.protect_many(d.v1, profile, v[probes])
        variants = [("single", [np.array(enrol_single)]), (f"fused k={s.enrol_k}", [np.array(enrol_fused)])]
        if profile.keeps_sample_codes:  # what Enroll does with this profile: the k codes kept apart, best one scores
            apart = np.array([v[np.flatnonzero(subjects == o)[:s.enrol_k]] for o in owners])
            variants.append((f"kept apart k={s.enrol_k}", [apart[:, j] for j in range(s.enrol_k)]))
        for label, parts in variants:
            raw = np.max([enrol @ v[probes].T for enrol in parts], axis=0)
            prot = np.max([code_matrix(d.protector.protect_many(d.v1, profile, enrol), probe_codes, profile.hash_count)
                           for enrol in parts], axis=0)
            for system, m in (("raw cosine", raw), (profile.name, prot)):
                r = metrics.rates(m[same], m[~same])
                rows.append([s.label, label, system, f"{r.genuine} / {r.impostor}", pct(r.eer),
                             pct(r.fnmr[1e-2]), pct(r.fnmr[1e-3])])
    report.add(table(["set", "enrolment", "system", "genuine / impostor", "EER", "FNMR@FMR1e-2", "FNMR@FMR1e-3"],
                     rows) + "\n")


def _nonmated(values: np.ndarray, cfg: Config) -> np.ndarray:
    if len(values) <= cfg.max_nonmated:
        return values
    return np.random.default_rng(cfg.seed).choice(values, cfg.max_nonmated, replace=False)


def _seal_bytes(protector: Protector, key: TenantKey, s: Set, codes: np.ndarray,
                profile: ProtectionProfile) -> np.ndarray:
    """Sealed rows (the database attacker's view), one fresh salt each: (n, bytes) uint8."""
    rows = []
    for n, code in enumerate(codes):
        row = RowIdentity(key.tenant, f"t{n}", f"s{n}", 1 if s.face else 2, 0, profile.name, key.version)
        _, sealed = protector.seal(key, row, code)
        rows.append(np.frombuffer(sealed, np.uint8))
    return np.array(rows)


def unlinkability_section(report: Report, sets: list[Set], cfg: Config, keyed: dict[str, Keyed],
                          summary: dict) -> None:
    report.add("## Unlinkability (Gomez-Barrero et al., IEEE TIFS 2018)\n")
    report.add(
        "D<->sys: 0 = unlinkable, 1 = fully linkable; 'floor' is the value two samples of one and the same "
        "distribution give at these sample sizes (the estimator's bias, mean of 5 draws), so a D<->sys near its floor is "
        "indistinguishable from unlinkable. Mated: two templates of the same subject; non-mated: different "
        f"subjects (at most {cfg.max_nonmated:,} drawn at random). Codes of {cfg.link_keys} independent keys "
        "are pooled (the pre-image scenario: the first key file only).\n\n"
        "Scenarios:\n"
        "- *Across tenants, codes in the clear*: the same person enrolled in two tenants (two projection keys); "
        "mated pairs include the same sample enrolled twice. An attacker needs both tenants' databases and "
        "storage keys to see these codes.\n"
        "- *Across tenants, attacker holds both projection keys*: inverts a tenant-A code (pre-image attack "
        "below), re-protects the pre-image under tenant B's key and compares with B's codes.\n"
        "- *Reissue, same key version, codes in the clear*: a template and its reissue from fresh samples (the "
        "service's Reissue keeps the key version): an attacker holding the keys sees two same-key codes.\n"
        "- *Reissue after key rotation*: old template (key v1) vs re-enrolment from fresh samples (v2).\n"
        "- *Database only*: the sealed rows of a template and its reissue (AES-GCM, fresh salt), compared bit "
        "by bit: what a database thief has.\n")
    rows = []
    for s in sets:
        profile = profile_of(s, cfg)
        k = keyed[s.label]
        subjects, ok = s.subjects, s.feats.ok
        valid = np.outer(ok, ok)
        same = subjects[:, None] == subjects[None, :]
        distinct = ~np.eye(len(subjects), dtype=bool)
        upper = np.triu(np.ones_like(same), 1)
        results: dict[str, tuple[list, list]] = {}

        def add(name, mated, nonmated):
            results.setdefault(name, ([], []))
            results[name][0].append(mated)
            results[name][1].append(nonmated)

        # every key draw is independent: pooling them shrinks the estimator's floor
        extra = max(0, cfg.link_keys - len(k.draws))
        more = keyed_codes(s, replace(cfg, keys=extra)) if extra else Keyed([], [], [])
        for d, codes, other in zip(k.draws + more.draws, k.victim + more.victim, k.attacker + more.attacker):
            cross = code_matrix(codes, other, profile.hash_count)
            add("across tenants, codes in the clear", cross[valid & same], cross[valid & ~same])
            inside = code_matrix(codes, codes, profile.hash_count)
            add("reissue, same key version (keys held)", inside[valid & same & upper], inside[valid & ~same & upper])
            rotated = code_matrix(codes, d.protector.protect_many(d.v2, profile, s.feats.vectors), profile.hash_count)
            add("reissue after key rotation", rotated[valid & same & distinct], rotated[valid & ~same])
            sealed = _seal_bytes(d.protector, d.v1, s, codes, profile)
            bits = np.array([1 - np.bitwise_count(row ^ sealed).sum(axis=1) / (8 * sealed.shape[1])
                             for row in sealed])
            # bits is symmetric: each unordered pair once
            add("database only: sealed rows", bits[valid & upper & same], bits[valid & upper & ~same])
        results = {name: (np.concatenate(m), np.concatenate(n)) for name, (m, n) in results.items()}
        d, codes, other = k.draws[0], k.victim[0], k.attacker[0]
        # attacker holding both tenants' projection keys: pre-image from A, re-protected under B
        targets = _attack_targets(s, cfg)
        bank = attacks.bank_of(d.protector, d.v1, profile)
        guess = attacks.preimage(codes[targets], bank, profile, steps=cfg.attack_steps, seed=cfg.seed)
        moved = code_matrix(d.protector.protect_many(d.attacker, profile, guess), other, profile.hash_count)
        tsame = same[targets] & ok[None, :]
        results["across tenants, attacker holds both keys"] = (moved[tsame], moved[~same[targets] & ok[None, :]])
        for name, (mated, nonmated) in results.items():
            result = linkage(mated, _nonmated(nonmated, cfg), seed=cfg.seed)
            summary.setdefault("linkage", {})[(s.label, name)] = result
            rows.append([s.label, name, f"{result.mated} / {result.nonmated}", f"{result.d_sys:.3f}",
                         f"{result.floor:.3f}"])
            if name != "database only: sealed rows" or s is sets[0]:
                report.add(report.linkage(f"{s.label}: {name}", result) + "\n")
    report.add(table(["set", "scenario", "mated / non-mated", "D<->sys", "floor"], rows) + "\n")


def _attack_targets(s: Set, cfg: Config) -> np.ndarray:
    """Up to cfg.attack_targets samples, one per subject, from subjects with another usable sample."""
    subjects, ok = s.subjects, s.feats.ok
    picks = []
    for subject in dict.fromkeys(subjects):
        idx = [i for i in np.flatnonzero(subjects == subject) if ok[i]]
        if len(idx) >= 2:
            picks.append(idx[0])
    step = max(1, len(picks) // cfg.attack_targets)
    return np.array(picks[::step][:cfg.attack_targets])


def renewability(report: Report, sets: list[Set], cfg: Config, keyed: dict[str, Keyed], summary: dict) -> None:
    report.add("## Renewability\n")
    report.add(
        "Old template: enrolled from a subject's first sample under key version 1. Renewed: reissued from "
        "the subject's other samples fused (Reissue keeps the key version), or re-enrolled from them after "
        "key rotation (version 2); new probes: the other samples one by one under version 2. "
        "'≥ threshold' is how often the service would accept the old template as the renewed one. Across key versions every score sits at chance agreement (about 1/q), below even the same-key impostors (dlib embeddings of different people are far from orthogonal): the renewed template is unrelated to the old one, which the unlinkability section quantifies (reissue after key rotation).\n")
    rows = []
    for s in sets:
        profile = profile_of(s, cfg)
        d = keyed[s.label].draws[0]
        subjects, ok, v = s.subjects, s.feats.ok, s.feats.vectors
        old, renewed, owners, probes = [], [], [], []
        for subject in dict.fromkeys(subjects):
            idx = [i for i in np.flatnonzero(subjects == subject) if ok[i]]
            if len(idx) < 2:
                continue
            old.append(v[idx[0]])
            renewed.append(fuse(list(v[idx[1:]])))
            owners.append(subject)
            probes += idx[1:]
        old_codes = d.protector.protect_many(d.v1, profile, np.array(old))
        owners = np.array(owners)
        mates = owners[:, None] == owners[None, :]
        series = {}
        same_key = code_matrix(old_codes, d.protector.protect_many(d.v1, profile, np.array(renewed)),
                               profile.hash_count)
        series["old vs reissued (same key version)"] = same_key[mates]
        rotated = code_matrix(old_codes, d.protector.protect_many(d.v2, profile, np.array(renewed)),
                              profile.hash_count)
        series["old vs re-enrolled after rotation"] = rotated[mates]
        probe_m = code_matrix(old_codes, d.protector.protect_many(d.v2, profile, v[probes]), profile.hash_count)
        series["old vs new probes (v2)"] = probe_m[owners[:, None] == subjects[probes][None, :]]
        series["impostors (same key)"] = same_key[~mates]
        series["impostors (v1 vs v2)"] = rotated[~mates]
        for name, values in series.items():
            rows.append([s.label, name, len(values), f"{values.mean():.3f}",
                         pct(np.mean(values >= agreement_threshold(profile)))])
        summary.setdefault("renewability", {})[s.label] = series
        report.add(report.histograms(f"{s.label}: renewability ({profile.name})", series,
                                     agreement_threshold(profile)) + "\n")
    report.add(table(["set", "comparison", "pairs", "mean score", "≥ threshold"], rows) + "\n")


def irreversibility(report: Report, sets: list[Set], cfg: Config, keyed: dict[str, Keyed], summary: dict) -> None:
    report.add("## Irreversibility: pre-image attack\n")
    report.add(
        "(a) *Database only*: every stored code is AES-GCM sealed under a per-row key derived from the tenant's "
        "storage key and the row's salt; the attacker tries to open each target row under keys of their own "
        "(a fresh random key): 'rows opened' counts successes. There is no code to invert.\n\n"
        "(b) *Database and every key*: the codes are in the clear and the projection bank is known. The attack "
        "(benchmarks/evaluation/attacks.py) solves the m(q-1) linear inequalities each code imposes by projected hinge-loss "
        f"descent ({cfg.attack_steps} Adam steps, random start, no training data), the linear-program "
        "inversion of Lai et al. (TIFS 2021) / Paik et al. (BMVC 2023). Success = the service's decision at the "
        "profile threshold when the pre-image is presented as a probe: against the stolen template itself, "
        "against another template of the same subject (same key), and, after the tenant key is rotated and the "
        "subject re-enrolled from another sample, against that new template. 'raw matcher' = the pre-image "
        "accepted by the unprotected matcher (cosine of the vault's feature vectors) against another sample "
        "of the subject at that matcher's FMR 1e-3 threshold on this set. 'Wrong key': the same attack run with "
        "a projection bank from a key that is not the tenant's. Reference: the genuine subject's own sample "
        "against the other template.\n")
    rows = []
    for s in sets:
        profile = profile_of(s, cfg)
        k = keyed[s.label]
        d, codes = k.draws[0], k.victim[0]
        subjects, ok, v = s.subjects, s.feats.ok, s.feats.vectors
        targets = _attack_targets(s, cfg)
        mates = [next(j for j in np.flatnonzero(subjects == subjects[t]) if j != t and ok[j]) for t in targets]
        # (a) database only
        thief = fresh_key(VICTIM, 1)  # the attacker's own key for the victim tenant's version 1
        opened = 0
        for n, t in enumerate(targets):
            row = RowIdentity(VICTIM, f"t{n}", f"s{n}", 1 if s.face else 2, 0, profile.name, 1)
            salt, sealed = d.protector.seal(d.v1, row, codes[t])
            try:
                Protector().unseal(thief, row, profile, salt, sealed)
                opened += 1
            except IntegrityError:
                pass
        # (b) keys held
        started = time.perf_counter()
        guess = attacks.preimage(codes[targets], attacks.bank_of(d.protector, d.v1, profile), profile,
                                 steps=cfg.attack_steps, seed=cfg.seed)
        seconds = (time.perf_counter() - started) / len(targets)
        wrong_bank = attacks.bank_of(Protector(), fresh_key(VICTIM, 1), profile)
        wrong = attacks.preimage(codes[targets], wrong_bank, profile, steps=cfg.attack_steps, seed=cfg.seed)
        thr = agreement_threshold(profile)
        v1 = lambda x: d.protector.protect_many(d.v1, profile, x)  # noqa: E731
        v2 = lambda x: d.protector.protect_many(d.v2, profile, x)  # noqa: E731
        pair = lambda a, b: np.array([agreement(a[n], b[n:n + 1], profile.hash_count)[0]  # noqa: E731
                                      for n in range(len(a))])
        g_code, mate_codes = v1(guess), codes[mates]
        w_code = v1(wrong)
        a, b = np.triu_indices(len(subjects), 1)
        usable = ok[a] & ok[b] & (subjects[a] != subjects[b])
        raw_thr = threshold_at_fmr(np.einsum("ij,ij->i", v[a[usable]], v[b[usable]]), 1e-3)
        res = {
            "rows opened (database only)": f"{opened} / {len(targets)}",
            "vs stolen template": np.mean(pair(g_code, codes[targets]) >= thr),
            "vs other template, same key": np.mean(pair(g_code, mate_codes) >= thr),
            "vs re-enrolment after rotation": np.mean(pair(v2(guess), v2(v[mates])) >= thr),
            "raw matcher": np.mean(np.sum(guess * v[mates], 1) >= raw_thr),
            "cosine(pre-image, enrolled x)": f"{np.mean(np.sum(guess * v[targets], 1)):.3f}",
            "wrong key: vs stolen template": np.mean(pair(w_code, codes[targets]) >= thr),
            "wrong key: vs other template": np.mean(pair(w_code, mate_codes) >= thr),
            "reference: genuine sample vs other template": np.mean(pair(codes[targets], mate_codes) >= thr),
            "attack time per template": f"{seconds:.2f} s",
        }
        summary.setdefault("attack", {})[s.label] = res
        for name, value in res.items():
            rows.append([s.label, profile.name, name, value if isinstance(value, str) else pct(value, 1)])
    report.add(table(["set", "profile", "measure", "value"], rows) + "\n")


def speed(report: Report, faces: list[Set], fingers: list[Set], cfg: Config) -> None:
    report.add("## Speed\n")
    report.add(
        "Taken on a shared, loaded 2-core machine (other engineers' tests and benchmarks were running): "
        "read as orders of magnitude. Extraction times are those recorded when the features were extracted "
        "(process pool, one image per worker) and may come from an earlier run (cache). 1:N identification at "
        "scale: benchmarks/performance/identify_speed.py.\n")
    rows = []
    for s in faces + fingers:
        rows.append([f"extract features ({s.label})", f"{1000 * np.median(s.feats.seconds[s.feats.ok]):.1f} ms",
                     "per image, median"])
    for s in fingers:
        rows.append([f"bozorth3 extract ({s.label})", f"{1000 * np.median(s.boz.extract_seconds):.1f} ms",
                     "per image, median"])
        rows.append([f"bozorth3 compare ({s.label})", f"{1000 * s.boz.compare_seconds:.2f} ms", "per pair, mean"])
    for s in (faces[0], fingers[0]):
        profile = profile_of(s, cfg)
        protector, key = Protector(), fresh_key(VICTIM)
        started = time.perf_counter()
        protector.protect(key, profile, s.feats.vectors[0])
        rows.append([f"draw projection bank ({profile.name})", f"{1000 * (time.perf_counter() - started):.1f} ms",
                     "once per key version and profile"])
        x = s.feats.vectors[:200]
        started = time.perf_counter()
        codes = [protector.protect(key, profile, row) for row in x]
        rows.append([f"protect ({profile.name})", f"{1e6 * (time.perf_counter() - started) / len(x):.0f} µs",
                     "per sample, bank cached"])
        codes = np.array(codes)
        started = time.perf_counter()
        for n in range(len(codes)):
            agreement(codes[n], codes[n:n + 1], profile.hash_count)
        rows.append([f"compare 1:1 ({profile.name})", f"{1e6 * (time.perf_counter() - started) / len(codes):.1f} µs",
                     "per call (one pair)"])
        ns, size = one_to_many_ns(codes, profile.hash_count)
        rows.append([f"compare 1:N ({profile.name})", f"{ns:.0f} ns", f"per pair, one probe vs {size:,} codes"])
    report.add(table(["operation", "time", "unit"], rows) + "\n")


def fingerprint_targets(report: Report, cfg: Config) -> None:
    """Issue 5's table: protected fingerprint EER against NBIS bozorth3, per set, input and protocol."""
    from benchmarks.evaluation import fingerprint_mcc

    profile = fingerprint_mcc.bench_profile(cfg.finger_profile.hash_count, cfg.finger_profile.hash_width)
    rows = []
    for r in fingerprint_mcc.rows(data.DATA, profile, max(cfg.keys, 5)):
        if r["db"] == 4:
            continue  # synthetic (SFinGe): benchmarks/results/fingerprint_mcc.txt has it
        for j, protocol in enumerate(("all pairs", "FVC")):
            boz, one, three = r["bozorth3"][j], r["prot-1"][j], r["prot-3"][j]

            def verdict(ours):
                return "stretch" if ours <= boz / 3 else ("met" if ours <= boz / 2 else "missed")

            rows.append([f"{r['name'].upper().replace(' ISO', ' (ISO 19794-2 input)')}", protocol,
                         f"{boz:.1f}", "-" if r["iso"] else f"{r['boz-3'][j]:.1f}", f"{r['raw'][j]:.1f}",
                         f"{one:.1f}", verdict(one), f"{three:.1f}", verdict(three),
                         f"{r['normal'][j]:.1f}"])
    report.add("## Fingerprint: protected templates against bozorth3 (issues 5 and 12)\n\n"
               f"EER %, {cfg.finger_profile.name}'s feature vector and transform shape, protected columns the "
               f"mean of {max(cfg.keys, 5)} key draws; made by `uv run python benchmarks/evaluation/fingerprint_mcc.py`, "
               "whose docstring defines each column. FVC2002 sets use the shipped basis (fitted on FVC2000); "
               "FVC2000 sets a basis fitted on FVC2002. bozorth3: NBIS on raw minutiae, one impression against "
               "one (../shared/data/README.md); bozorth3, 3 enrolled: its best score over the same 3 enrolment "
               "impressions the protected 3-touch column uses (the like-for-like reference for it). Key stolen: "
               "every template under one key the attacker holds. Minutiae: LEADER (the service's extractor) "
               "for the image rows, the ISO records' own for ISO rows. Target (issue 12): protected EER <= half of "
               "bozorth3 (one impression); stretch: <= a third. finger-mcc-v3 (mindtct minutiae) scored, one "
               "impression, key stolen: FVC2000 DB1 12.4 / 11.8, DB2 11.2 / 14.4, DB3 17.8 / 16.2; FVC2002 DB1 "
               "5.6 / 8.9, DB2 3.1 / 2.8, DB3 10.6 / 8.6 (all pairs / FVC; the report of 2026-11-26).\n\n"
               + table(["set", "protocol", "bozorth3", "bozorth3, 3 enrolled", "raw vector", "protected, 1 sample, key stolen",
                        "target", "protected, 3 enrolled, key stolen", "target", "protected, 1 sample, key secret"], rows)
               + "\n")


def fingerprint_operating_point(report: Report, cfg: Config) -> None:
    """Issue 12's tables: thresholds that hold on unseen sensors and against synthetic prints."""
    import contextlib
    import io

    from benchmarks.calibration import fingerprint_operating_point as op

    out = report.folder / "fingerprint_operating_point.md"
    with contextlib.redirect_stdout(io.StringIO()):
        op.main(["--keys", str(max(cfg.keys, 5)), "--report", str(out)])
    body = out.read_text().split("\n", 1)[1]
    report.add("## Fingerprint: operating point on unseen sensors and synthetic prints (issue 12)\n\n"
               "Made by `uv run python -m benchmarks.calibration.fingerprint_operating_point` (its docstring defines the "
               "protocols and the calibration rule); also written to fingerprint_operating_point.md.\n" + body + "\n")


def headline(report: Report, faces: list[Set], fingers: list[Set], cfg: Config, summary: dict) -> None:
    acc, link = summary.get("accuracy", {}), summary.get("linkage", {})
    lines = ["## Headline\n"]
    for s in faces + fingers:
        profile = profile_of(s, cfg)
        raw = raw_system(s, cfg)
        r_raw = acc.get((s.label, "all pairs", raw))
        r_prot = acc.get((s.label, "all pairs", f"{profile.name}, key stolen (in-tenant)"))
        r_sec = acc.get((s.label, "all pairs", f"{profile.name}, key secret"))
        if r_raw and r_prot:
            lines.append(
                f"- {s.label} (all pairs): TAR@FMR1e-3 raw {raw} {pct(r_raw.tar(1e-3))}, protected {profile.name} "
                f"{pct(r_prot.tar(1e-3))} with the key stolen, {pct(r_sec.tar(1e-3))} with the key secret; "
                f"EER {pct(r_raw.eer)} vs {pct(r_prot.eer)}.")
    for (label, scenario), result in link.items():
        if scenario in ("across tenants, codes in the clear", "reissue after key rotation",
                        "reissue, same key version (keys held)", "across tenants, attacker holds both keys"):
            lines.append(f"- D<->sys {label}, {scenario}: {result.d_sys:.3f} (floor {result.floor:.3f})")
    report.add("\n".join(lines) + "\n")


def run(folder, cfg: Config, command: str) -> Report:
    from tqdm import tqdm

    report = Report(folder, "vault evaluation: raw vs protected (ISO/IEC 24745, 30136)")
    report.add(f"Command: `{command}`  \nGenerated {time.strftime('%Y-%m-%d %H:%M')}"
               f"{' — QUICK mode: small subsets, not for reporting' if cfg.quick else ''}.  \n"
               f"Profiles: {cfg.face_profile.name} (d={cfg.face_profile.feature_dim}, m={cfg.face_profile.hash_count}, "
               f"q={cfg.face_profile.hash_width}, {cfg.face_profile.template_bytes} B, threshold "
               f"{cfg.face_profile.threshold:.4f}"
               f"{' normalised, agreement %.4f at the prior' % agreement_threshold(cfg.face_profile) if cfg.face_profile.score_norm else ''}"
               f"); {cfg.finger_profile.name} (d={cfg.finger_profile.feature_dim}, "
               f"m={cfg.finger_profile.hash_count}, q={cfg.finger_profile.hash_width}, "
               f"{cfg.finger_profile.template_bytes} B, threshold {cfg.finger_profile.threshold:.4f}).  \n"
               "Data: ORL/AT&T faces (Olivetti Research Laboratory), LFW subset (Huang et al.), FVC2000/FVC2002 B "
               "sets (University of Bologna biolab), read in place from ../shared/data.  \n"
               "Caveat: the fingerprint vector's MCC PCA basis (vault/models) is fitted on FVC2000, so FVC2000 "
               "fingerprint rows here are optimistic (scored on the fitting data); FVC2002 rows are held out. "
               "benchmarks/evaluation/fingerprint_mcc.py scores FVC2000 with a basis fitted on FVC2002 instead.\n")
    faces, fingers = load_sets(cfg)
    sets = faces + fingers
    keyed = {s.label: keyed_codes(s, cfg) for s in sets}
    summary: dict = {}
    if cfg.quick:
        link_sets = [faces[-1], fingers[0]]
    else:
        pooled = [f for f in fingers if f.label.startswith("FVC2002") and "synthetic" not in f.label]
        fvc = Set("FVC2002 DB1-DB3_B pooled", features.concat([f.feats for f in pooled], "fvc2002-db1-3"),
                  fvc=True, enrol_k=3)
        keyed[fvc.label] = keyed_codes(fvc, cfg)
        link_sets = [faces[-1], fvc]
    steps = [("accuracy", lambda: accuracy(report, sets, cfg, keyed, summary)),
             ("multi-sample", lambda: multi_sample(report, sets, cfg, keyed)),
             ("unlinkability", lambda: unlinkability_section(report, link_sets, cfg, keyed, summary)),
             ("renewability", lambda: renewability(report, link_sets, cfg, keyed, summary)),
             ("irreversibility", lambda: irreversibility(report, link_sets, cfg, keyed, summary)),
             ("speed", lambda: speed(report, faces, fingers, cfg))]
    if not cfg.quick:
        steps.insert(1, ("fingerprint targets", lambda: fingerprint_targets(report, cfg)))
        steps.insert(2, ("fingerprint operating point", lambda: fingerprint_operating_point(report, cfg)))
    body_start = len(report.parts)
    for name, step in tqdm(steps, desc="evaluate", unit="section", disable=not cfg.progress):
        step()
    headline_report = Report(folder, "")
    headline(headline_report, faces, fingers, cfg, summary)
    report.parts[body_start:body_start] = headline_report.parts[1:]
    report.summary = summary
    report.write()
    return report


def with_shape(profile: ProtectionProfile, hash_count: int, hash_width: int, threshold: float | None = None,
               name: str | None = None) -> ProtectionProfile:
    return replace(profile, name=name or f"{profile.name.split('-v')[0]}-m{hash_count}-q{hash_width}",
                   hash_count=hash_count, hash_width=hash_width,
                   threshold=profile.threshold if threshold is None else threshold,
                   calibration="benchmark candidate")
