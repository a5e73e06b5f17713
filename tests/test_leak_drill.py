"""The leak drill against a real two-tenant TLS deployment with real LFW faces."""

from tests.conftest import data_path
from vault import leakdrill


def test_a_stolen_database_yields_nothing_reusable():
    report = leakdrill.run(data_path(), people=16, workers=2)
    assert report.search_self_check  # the searches below would find their targets if they were there
    assert report.rows_copied == 16 * 2 + 8  # every enrolment and the 8 reissues, in the copy
    assert (report.images_found, report.feature_vectors_found, report.clear_templates_found,
            report.credentials_found, report.unsealed_by_second_deployment) == (0, 0, 0, 0, 0)
    # Linkage at chance: 16 mated vs 240 non-mated pairs, so allow +-0.2 (~3 standard errors).
    assert abs(report.cross_tenant_linkage_auc - 0.5) < 0.2
    assert abs(report.reissue_linkage_auc - 0.5) < 0.25
