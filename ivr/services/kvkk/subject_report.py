"""The Article 11 report: everything held about a phone number, as JSON or plain text."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ivr.domain import times
from ivr.domain.kvkk.businessdays import ISTANBUL
from ivr.domain.kvkk.notice_facts import localised
from ivr.domain.kvkk.policy import Policy
from ivr.domain.pii import PersonalData
from ivr.domain.times import utc_iso_or_none
from ivr.domain.vocabulary import CHANNELS
from ivr.services.reports import recording_dict
from ivr.storage.kvkk_models import IysBatch, IysRecord, SubjectRequest
from ivr.storage.models import Call, Recording

from .status import history, status_from

LANGS = ("tr", "en")


def _event(c) -> dict:
    return {"consent_id": c.id, "decision": c.decision, "channels": list(c.channels or []),
            "captured_at": utc_iso_or_none(c.captured_at), "source": c.source,
            "call_sid": c.call_sid,
            "keys": c.digits or None, "language": c.language, "purpose": c.purpose,
            "notice_version": c.notice_version, "agent_id": c.agent_id, "reason": c.reason}


def build(session: Session, pii: PersonalData, phone: str, policy: Policy, lang: str,
          now: datetime) -> dict:
    """The report for one phone number (E.164) in one language."""
    subject = pii.fingerprint(phone)
    if subject is None:  # fingerprint is typed str | None, though only None gives None
        raise ValueError("a subject report needs a phone number")
    calls = list(session.scalars(select(Call).where(Call.phone_hmac == subject)
                                 .order_by(Call.created_at, Call.call_sid)))
    sids = [c.call_sid for c in calls]
    recordings = list(session.scalars(select(Recording).where(Recording.call_sid.in_(sids))
                                      .order_by(Recording.start_time, Recording.recording_sid))
                      ) if sids else []
    events = history(session, subject)
    status = status_from(events)
    iys_rows = session.execute(
        select(IysRecord, IysBatch.status, IysBatch.transaction_id)
        .outerjoin(IysBatch, IysBatch.id == IysRecord.batch_id)
        .where(IysRecord.recipient_hmac == subject)
        .order_by(IysRecord.consent_at, IysRecord.id)).all()
    requests = list(session.scalars(select(SubjectRequest).where(
        SubjectRequest.phone_hmac == subject).order_by(SubjectRequest.received_on,
                                                       SubjectRequest.id)))
    facts = localised(lang)
    return {
        "report": {"kind": "kvkk-article-11-subject-report", "language": lang,
                   "generated_at": utc_iso_or_none(now), "notice": facts["notice"]},
        "subject": {"phone": phone},
        "controller": facts["controller"],
        "calls": [{"call_sid": c.call_sid, "direction": c.direction, "to": c.to_number,
                   "status": c.status, "started_at": utc_iso_or_none(c.started_at),
                   "answered_at": utc_iso_or_none(c.answered_at),
                   "ended_at": utc_iso_or_none(c.ended_at),
                   "duration": c.duration} for c in calls],
        "recordings": [{**recording_dict(r), "call_sid": r.call_sid} for r in recordings],
        "consents": {
            "current": {ch: {"status": st.status, "since": utc_iso_or_none(st.since),
                             "source": st.source,
                             "consent_id": st.consent_id} for ch, st in status.items()},
            "history": {ch: [_event(e) for e in events if ch in (e.channels or ())]
                        for ch in CHANNELS},
        },
        "iys": [{"type": r.type, "status": r.status, "consentDate": r.consent_date,
                 "outcome": r.outcome, "reason": r.reason, "batch": r.batch_id,
                 "batch_status": bstatus, "transaction_id": tid}
                for r, bstatus, tid in iys_rows],
        "requests": [{"id": r.id, "kind": r.kind, "channel": r.channel,
                      "received_on": r.received_on.isoformat(), "due_on": r.due_on.isoformat(),
                      "status": r.status, "closed_at": utc_iso_or_none(r.closed_at)}
                     for r in requests],
        "processing": {"collection_method": facts["collection_method"],
                       "data_categories": facts["data_categories"],
                       "recipient_groups": facts["recipient_groups"]},
        "retention_days": policy.describe(),
        "rights": [{**r, "how": facts["how_to_apply"]} for r in facts["rights"]],
        "how_to_apply": facts["how_to_apply"],
        "withdraw_consent": facts["withdraw_consent"],
    }


LABELS = {
    "tr": {
        "title": "KİŞİSEL VERİ BİLGİ RAPORU (KVKK madde 11)",
        "generated": "Hazırlanma zamanı", "phone": "Telefon numarası",
        "controller": "Veri sorumlusu", "calls": "Çağrılar", "no_calls": "Kayıtlı çağrı yok.",
        "call": "Çağrı", "started": "başlangıç", "ended": "bitiş", "duration": "süre",
        "seconds": "sn", "status": "durum",
        "recordings": "Ses kayıtları (yalnızca bilgileri)", "no_recordings": "Ses kaydı yok.",
        "consents": "Pazarlama izni (kanal bazında)", "current": "Güncel durum",
        "since": "tarihinden beri", "history": "Geçmiş", "no_history": "kayıt yok",
        "via": "kaynak", "keys": "tuşlar",
        "iys": "İleti Yönetim Sistemi (İYS) bildirimleri", "no_iys": "İYS'ye bildirim yok.",
        "requests": "Başvurularınız", "no_requests": "Kayıtlı başvuru yok.",
        "received": "alındı", "due": "son yanıt günü",
        "processing": "Verilerinizi neden ve hangi hukuki sebeple işliyoruz",
        "data": "Veriler", "bases": "Hukuki sebepler", "purposes": "Amaçlar",
        "method": "Toplama yöntemi", "recipients": "Verilerin aktarılabileceği alıcı grupları",
        "retention": "Saklama süreleri (gün)", "rights": "Haklarınız (KVKK madde 11)",
        "how": "Haklarınızı nasıl kullanırsınız", "withdraw": "İzninizi geri almak için",
    },
    "en": {
        "title": "PERSONAL DATA REPORT (KVKK Article 11)",
        "generated": "Prepared at", "phone": "Phone number",
        "controller": "Data controller", "calls": "Calls", "no_calls": "No calls on record.",
        "call": "Call", "started": "started", "ended": "ended", "duration": "duration",
        "seconds": "s", "status": "status",
        "recordings": "Call recordings (metadata only)", "no_recordings": "No recordings.",
        "consents": "Marketing consent (per channel)", "current": "Current status",
        "since": "since", "history": "History", "no_history": "nothing on record",
        "via": "source", "keys": "keys",
        "iys": "Registrations with İYS (the commercial-message registry)",
        "no_iys": "Nothing registered with İYS.",
        "requests": "Your requests", "no_requests": "No requests on record.",
        "received": "received", "due": "answer due by",
        "processing": "Why we process your data, and on what legal basis",
        "data": "Data", "bases": "Legal bases", "purposes": "Purposes",
        "method": "How it is collected", "recipients": "Who it may be transferred to",
        "retention": "Retention periods (days)", "rights": "Your rights (KVKK Article 11)",
        "how": "How to use your rights", "withdraw": "To withdraw your consent",
    },
}
DECISIONS = {
    "tr": {"granted": "onay verildi", "declined": "onay verilmedi", "withdrawn": "izin geri alındı",
           "no_input": "seçim yapılmadı", "none": "kayıt yok"},
    "en": {"granted": "consent given", "declined": "consent refused",
           "withdrawn": "consent withdrawn", "no_input": "no choice made", "none": "no record"},
}
CHANNEL_NAMES = {
    "tr": {"ARAMA": "Telefonla arama", "MESAJ": "SMS", "EPOSTA": "E-posta"},
    "en": {"ARAMA": "Phone calls", "MESAJ": "SMS", "EPOSTA": "E-mail"},
}
IYS_OUTCOMES = {
    "tr": {"exported": "İYS'ye bildirildi", "skipped": "bildirilmesi gerekmedi",
           "superseded": "sonraki kararınız bildirildi", "rejected": "İYS kabul etmedi"},
    "en": {"exported": "registered with İYS", "skipped": "no registration needed",
           "superseded": "your later decision was used", "rejected": "refused by İYS"},
}
CALL_STATUS = {
    "tr": {"completed": "tamamlandı", "busy": "meşgul", "failed": "başarısız",
           "no-answer": "cevapsız", "canceled": "iptal", "in-progress": "sürüyor"},
    "en": {},
}
SOURCES = {
    "tr": {"ivr": "çağrı merkezi, tuşlama", "api": "müşteri temsilcisi"},
    "en": {"ivr": "call center, key press", "api": "customer agent"},
}
RETENTION = {
    "tr": {"transaction_security": "Çağrı ve işlem güvenliği bilgileri",
           "recording_metadata": "Ses kaydı bilgileri", "consent_records":
           "İzin kayıtları (izin geçerliliğini yitirdikten sonra)",
           "webhook_logs": "Teknik çağrı kayıtları", "iys_batch_files": "İYS bildirim dosyaları",
           "subject_requests": "Başvuru kayıtları (kapandıktan sonra)",
           "destruction_log": "İmha kayıtları"},
    "en": {"transaction_security": "Call and transaction-security data",
           "recording_metadata": "Recording metadata",
           "consent_records": "Consent records (after the consent ends)",
           "webhook_logs": "Technical call logs", "iys_batch_files": "İYS upload files",
           "subject_requests": "Request records (after closing)",
           "destruction_log": "Destruction records"},
}


def _local(iso: str | None, lang: str) -> str:
    # One label in every language and on every surface: Europe/Istanbul, UTC in brackets.
    return times.text(iso)


def _iys_local(consent_date: str) -> str:
    """İYS's consentDate (Istanbul wall-clock time, YYYY-MM-DD HH:MM:SS) for the person."""
    try:
        dt = datetime.strptime(consent_date, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ISTANBUL)
    except (TypeError, ValueError):
        return times.value_or_dash(consent_date)
    return times.text(dt)


def render_text(report: dict) -> str:  # noqa: C901 - the report's sections in reading order
    """The report as plain text for the person, in the report's language."""
    lang = report["report"]["language"]
    L, out = LABELS[lang], []

    def head(title):
        out.extend(["", title, "-" * len(title)])

    out += [L["title"], "=" * len(L["title"]),
            f"{L['generated']}: {_local(report['report']['generated_at'], lang)}",
            f"{L['phone']}: {report['subject']['phone']}",
            f"{L['controller']}: {report['controller']['name']}, {report['controller']['address']}"
            f", {report['controller']['email']}"]
    head(L["calls"])
    for c in report["calls"]:
        out.append(f"- {L['call']} {c['call_sid']}: {L['started']} {_local(c['started_at'], lang)}"
                   f", {L['ended']} {_local(c['ended_at'], lang)}, {L['duration']} "
                   f"{times.value_or_dash(c['duration'], ' ' + L['seconds'])}, "
                   f"{L['status']} {CALL_STATUS[lang].get(c['status'], c['status'] or '—')}")
    if not report["calls"]:
        out.append(L["no_calls"])
    head(L["recordings"])
    for r in report["recordings"]:
        out.append(f"- {r['recording_sid']} ({L['call']} {r['call_sid']}): "
                   f"{_local(r['start_time'], lang)}, {L['duration']} "
                   f"{times.value_or_dash(r['duration'], ' ' + L['seconds'])}, "
                   f"{L['status']} {r['status'] or '—'}")
    if not report["recordings"]:
        out.append(L["no_recordings"])
    head(L["consents"])
    for ch in CHANNELS:
        cur = report["consents"]["current"][ch]
        line = f"{CHANNEL_NAMES[lang][ch]}: {L['current']}: {DECISIONS[lang][cur['status']]}"
        if cur["since"]:
            when = _local(cur["since"], lang)
            line += f" ({when} {L['since']})" if lang == "tr" else f" ({L['since']} {when})"
        out.append(line)
        events = report["consents"]["history"][ch]
        out.append(f"  {L['history']}:" + ("" if events else f" {L['no_history']}"))
        for e in events:
            src = SOURCES[lang].get(e["source"], e["source"])
            keys = f", {L['keys']} {e['keys']}" if e["keys"] else ""
            out.append(f"    - {_local(e['captured_at'], lang)}: {DECISIONS[lang][e['decision']]}"
                       f" ({L['via']}: {src}{keys})")
    head(L["iys"])
    for r in report["iys"]:
        out.append(f"- {CHANNEL_NAMES[lang][r['type']]}: {r['status']} "
                   f"({_iys_local(r['consentDate'])}): "
                   f"{IYS_OUTCOMES[lang].get(r['outcome'], r['outcome'])}")
    if not report["iys"]:
        out.append(L["no_iys"])
    head(L["requests"])
    for r in report["requests"]:
        out.append(f"- #{r['id']} {r['kind']}: {L['received']} "
                   f"{times.local_day(date.fromisoformat(r['received_on']))}, {L['due']} "
                   f"{times.local_day(date.fromisoformat(r['due_on']))}, "
                   f"{L['status']} {r['status']}")
    if not report["requests"]:
        out.append(L["no_requests"])
    head(L["processing"])
    out.append(f"{L['method']}: {report['processing']['collection_method']}")
    for c in report["processing"]["data_categories"]:
        out += ["", f"* {c['name']}", f"  {L['data']}: {c['data']}",
                f"  {L['bases']}: " + "; ".join(c["legal_bases"]),
                f"  {L['purposes']}: " + "; ".join(c["purposes"])]
    head(L["recipients"])
    out += [f"- {g}" for g in report["processing"]["recipient_groups"]]
    head(L["retention"])
    out += [f"- {RETENTION[lang][k]}: {v}" for k, v in report["retention_days"].items()]
    head(L["rights"])
    out += [f"- {r['right']}" for r in report["rights"]]
    head(L["how"])
    out.append(report["how_to_apply"])
    head(L["withdraw"])
    out.append(report["withdraw_consent"])
    return "\n".join(out) + "\n"
