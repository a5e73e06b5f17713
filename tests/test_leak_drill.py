"""The leak drill against a real two-tenant TLS deployment with real LFW faces."""

import numpy as np

from tests.conftest import data_path
from benchmarks.drills import leak_drill as leakdrill


def test_a_stolen_database_yields_nothing_reusable():
    report = leakdrill.run(data_path(), people=12, workers=1)
    assert report.search_self_check  # the searches below would find their targets if they were there
    assert report.rows_copied == 12 * 2 + 6  # every enrolment and the 6 reissues, in the copy
    assert (report.images_found, report.feature_vectors_found, report.clear_templates_found,
            report.credentials_found, report.unsealed_by_second_deployment) == (0, 0, 0, 0, 0)
    # Linkage at chance. The sealed rows are fresh random bytes on every run, so the AUC moves by
    # chance (12 mated vs 132 non-mated pairs); the bound is on z, which chance alone
    # exceeds once in 1.7 million runs (tests/test_leak_drill.py::test_linkage_z_* pin the statistic).
    assert abs(report.cross_tenant_linkage_z) < 5
    assert abs(report.reissue_linkage_z) < 5
    assert report.revoked_rows_erased == 6  # revoke is erase: the 6 reissued templates' old rows
    # ... in older backups too: with the whole key store stolen later, the revoked rows of a backup
    # taken before the revocations do not open, while that backup's live rows do (the check works).
    assert (report.revoked_rows_opened_from_old_backup, report.live_rows_opened_from_old_backup) == (0, 12 * 2 - 6)
    # The whole state directory, served by the thief: no key file in it, no template usable.
    assert (report.key_file_in_state_dir, report.state_dir_rows_usable) == (False, 0)


def test_linkage_z_is_near_zero_for_chance_and_large_for_linked_scores():
    rng = np.random.default_rng(0)
    chance = [leakdrill.linkage(rng.binomial(1000, 1 / 256, 16) / 1000, rng.binomial(1000, 1 / 256, 240) / 1000)
              for _ in range(200)]
    z = np.array([z for _, z in chance])
    assert abs(z.mean()) < 0.25 and 0.8 < z.std() < 1.2  # a standard normal under chance
    auc, z_linked = leakdrill.linkage(list(np.linspace(0.6, 0.9, 16)), list(np.linspace(0.0, 0.7, 240)))
    assert auc > 0.9 and z_linked > 5
