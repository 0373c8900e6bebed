"""Results in the admin: hosts and findings read-only with cheap filters and search; the task page shows the
summary, the verdicts (per host, with cause and evidence), warnings and troubleshooting as readable HTML, and
staff download the raw .nessus file (streamed; refused to non-staff; 404 when absent)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils.html import escape

from tasks.models import Finding, ResultHost, ScanType
from tasks.results.ingest import ingest_results
from tasks.results.storage import results_path
from tests.factories import ScanTaskFactory, UserFactory
from tests.results_support import fixture, host, item, nessus, write

pytestmark = pytest.mark.django_db

# 3 hosts, 106 findings, SSH authentication failed on the hosts (see tests/fixtures/nessus/SOURCES.md).
AUTH_FAILURE = "libnessus-3hosts-ssh-auth-failure.nessus"
CREDENTIALED = "libnessus-localhost-credentialed.nessus"


def ingested(name: str = AUTH_FAILURE, scan_type: str = ScanType.AUTHENTICATED, **task_kwargs):
    task = ScanTaskFactory(scan_type=scan_type, **task_kwargs)
    ingest_results(task.id, fixture(name))
    task.refresh_from_db()
    return task


def test_task_page_shows_results_readably(admin_client):
    task = ingested()
    hosts = list(ResultHost.objects.filter(task=task))
    body = admin_client.get(reverse("admin:tasks_scantask_change", args=[task.pk])).content.decode()
    # summary
    assert "Top findings" in body and "By severity" in body and "critical 2" in body
    # verdict per host, with cause and evidence
    assert "Task verdict" in body
    for result_host in hosts:
        assert f"<td>{result_host.name}</td>" in body
        if result_host.auth_evidence:
            assert f"plugin {result_host.auth_evidence[0]['plugin_id']}" in body
    assert "Credentials rejected" in body or any(h.auth_cause == "" for h in hosts)
    # warnings and troubleshooting as text, not JSON
    assert task.warnings and escape(task.warnings[0]) in body
    assert task.troubleshooting
    entry = task.troubleshooting[0]
    assert escape(entry["title"]) in body and "Likely cause" in body and escape(entry["next_steps"][0]) in body
    assert '"next_steps"' not in body and '"severity_counts"' not in body and '"likely_cause"' not in body
    # links
    assert f"{reverse('admin:tasks_finding_changelist')}?task={task.pk}" in body
    assert reverse("admin:tasks_scantask_results_file", args=[task.pk]) in body


def test_findings_and_hosts_lists_filter_and_search(admin_client):
    task = ingested()
    other = ingested(CREDENTIALED, scan_type=ScanType.AUTHENTICATED)
    url = reverse("admin:tasks_finding_changelist")

    response = admin_client.get(f"{url}?task={task.pk}")
    assert response.context["cl"].queryset.count() == 106 == Finding.objects.filter(task=task).count()
    response = admin_client.get(f"{url}?task={task.pk}&severity=4")
    assert response.status_code == 200
    assert {f.severity for f in response.context["cl"].queryset} == {4}
    assert response.context["cl"].queryset.count() == 2

    finding = Finding.objects.filter(task=task).exclude(plugin_family="").first()
    response = admin_client.get(f"{url}?task={task.pk}&family={finding.plugin_family}")
    assert {f.plugin_family for f in response.context["cl"].queryset} == {finding.plugin_family}
    assert finding.plugin_family in response.content.decode()  # the family is offered once a task is picked

    response = admin_client.get(f"{url}?task={task.pk}&host={finding.host_name}")
    assert {f.host_name for f in response.context["cl"].queryset} == {finding.host_name}

    cve_finding = Finding.objects.filter(task=other).exclude(cve_index="").first()
    cve = cve_finding.cve_index.split()[0]
    response = admin_client.get(f"{url}?q={cve.lower()}")
    assert cve_finding in response.context["cl"].queryset
    assert all(f" {cve} " in f.cve_index for f in response.context["cl"].queryset)

    word = finding.plugin_name.split()[0]
    response = admin_client.get(f"{url}?q={word}")
    assert all(word.lower() in f.plugin_name.lower() or word.upper() in f.cve_index
               for f in response.context["cl"].queryset)

    assert admin_client.get(f"{url}?task=not-a-uuid").status_code == 200  # a bad id shows nothing, no 500
    hosts = reverse("admin:tasks_resulthost_changelist")
    response = admin_client.get(f"{hosts}?task={task.pk}&auth_verdict=failed")
    assert response.status_code == 200
    assert all(h.auth_verdict == "failed" for h in response.context["cl"].queryset)


def test_result_pages_are_read_only_and_render(admin_client):
    task = ingested()
    finding = Finding.objects.filter(task=task).exclude(plugin_output="").first()
    result_host = ResultHost.objects.filter(task=task).first()
    for url in (reverse("admin:tasks_finding_change", args=[finding.pk]),
                reverse("admin:tasks_resulthost_change", args=[result_host.pk])):
        response = admin_client.get(url)
        assert response.status_code == 200
        body = response.content.decode()
        assert 'name="_save"' not in body and task.name in body
    assert admin_client.get(reverse("admin:tasks_finding_add")).status_code == 403
    response = admin_client.post(reverse("admin:tasks_finding_delete", args=[finding.pk]), {"post": "yes"})
    assert response.status_code == 403 and Finding.objects.filter(pk=finding.pk).exists()


def test_a_cve_search_finds_that_cve_not_its_prefix(admin_client, tmp_path):
    export = nessus(host("10.8.0.1", item(1, "x", severity=3, name="long", children={"cve": "CVE-2024-12345"}),
                         item(2, "x", severity=3, name="short", children={"cve": "CVE-2024-1234"})), ssh_password=False)
    task = ScanTaskFactory(scan_type=ScanType.UNTRUSTED)
    ingest_results(task.id, write(tmp_path, export))
    url = reverse("admin:tasks_finding_changelist")
    for term, names in (("cve-2024-1234", {"short"}), ("CVE-2024-12345", {"long"}), ("2024-1234", {"short", "long"})):
        response = admin_client.get(url, {"q": term})
        assert {f.plugin_name for f in response.context["cl"].queryset} == names, term


def _hand_made_task(tmp_path, n_hosts: int, findings_per_host: int):
    hosts = [host(f"10.9.{n_hosts}.{i}",
                  *(item(20000 + j, "out", severity=j % 5, port=j, family=f"family {j % 3}",
                         children={"cve": f"CVE-2024-{j:04d}"}) for j in range(findings_per_host)))
             for i in range(n_hosts)]  # fmt: skip
    task = ScanTaskFactory(scan_type=ScanType.UNTRUSTED)
    ingest_results(task.id, write(tmp_path, nessus(*hosts, ssh_password=False), f"{task.pk}.nessus"))
    return task


@pytest.mark.parametrize(("model", "severity_param", "search"), [("tasks_finding", "severity", "plugin"),
                                                                 ("tasks_resulthost", "max_severity", "10.9")])
def test_results_changelists_queries_do_not_grow_with_rows(model, severity_param, search, admin_client, tmp_path,
                                                           django_assert_max_num_queries):
    url = reverse(f"admin:{model}_changelist")
    # session, user, count, rows (+ the selected task, + its family/host choices): the same bound at 5 and 50 rows.
    limit = 8
    few = _hand_made_task(tmp_path, 5, 1)  # 5 hosts, 5 findings
    for query in ("", f"?task={few.pk}", f"?task={few.pk}&{severity_param}=0&q={search}"):
        with django_assert_max_num_queries(limit):
            response = admin_client.get(url + query)
        assert response.status_code == 200 and len(response.context["cl"].result_list) == 5, query
    many = _hand_made_task(tmp_path, 50, 1)  # 50 more hosts, 50 more findings
    for query in ("", f"?task={many.pk}", f"?task={many.pk}&{severity_param}=0&q={search}"):
        with django_assert_max_num_queries(limit):
            response = admin_client.get(url + query)
        assert response.status_code == 200 and len(response.context["cl"].result_list) == 50, query


def test_raw_nessus_download_is_streamed_to_staff_only(client, admin_client):
    task = ingested()
    url = reverse("admin:tasks_scantask_results_file", args=[task.pk])
    response = admin_client.get(url)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"].startswith("attachment")
    assert b"".join(response.streaming_content) == results_path(task.pk).read_bytes()

    # Not logged in, or logged in without staff status: the admin's login page, never the file.
    assert client.get(url).status_code == 302
    client.force_login(UserFactory(is_staff=False))
    response = client.get(url)
    assert response.status_code == 302 and "/login/" in response["Location"]
    # Staff without the permission to view tasks: refused.
    staff = UserFactory(is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_scantask"))
    client.force_login(staff)
    assert client.get(url).status_code == 200

    # No file, or no such task: 404.
    results_path(task.pk).unlink()
    assert admin_client.get(url).status_code == 404
    body = admin_client.get(reverse("admin:tasks_scantask_change", args=[task.pk])).content.decode()
    assert "no raw .nessus file stored" in body
    missing = ScanTaskFactory()
    assert admin_client.get(reverse("admin:tasks_scantask_results_file", args=[missing.pk])).status_code == 404
    assert admin_client.get("/admin/tasks/scantask/not-a-uuid/results.nessus").status_code == 404
