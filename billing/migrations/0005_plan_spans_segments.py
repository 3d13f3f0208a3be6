"""Plan history (PlanSpan) for rating and metering by plan segment; meter rows carry their event timestamp and
segment; invoices keep when Stripe finalized them and what usage missed them."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("billing", "0004_meter_report_expired"),
    ]

    operations = [
        migrations.CreateModel(
            name="PlanSpan",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("starts_at", models.DateTimeField()),
                ("subscription_id", models.CharField(blank=True, max_length=64)),
                (
                    "source",
                    models.CharField(
                        blank=True, help_text="The Stripe event (or action) that told us.", max_length=100
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "plan",
                    models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="+", to="billing.plan"),
                ),
                (
                    "team",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="plan_spans", to="accounts.team"
                    ),
                ),
            ],
            options={"ordering": ["team", "starts_at"]},
        ),
        migrations.AddConstraint(
            model_name="planspan",
            constraint=models.UniqueConstraint(fields=("team", "starts_at"), name="billing_plan_span_once"),
        ),
        migrations.RenameField(model_name="meterreport", old_name="period_start", new_name="segment_start"),
        migrations.AlterField(
            model_name="meterreport",
            name="segment_start",
            field=models.DateTimeField(help_text="The start of the period, or of the plan segment within it."),
        ),
        migrations.AlterField(
            model_name="meterreport",
            name="cumulative",
            field=models.DecimalField(
                decimal_places=10,
                help_text="Exact billable units of the segment through this hour.",
                max_digits=30,
            ),
        ),
        migrations.AddField(model_name="meterreport", name="timestamp", field=models.DateTimeField(null=True)),
        migrations.RunSQL("UPDATE billing_meterreport SET timestamp = hour", migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="meterreport",
            name="timestamp",
            field=models.DateTimeField(help_text="The meter event's timestamp: the hour, or the segment's start."),
        ),
        migrations.RemoveConstraint(model_name="meterreport", name="billing_meter_hour_once"),
        migrations.AddConstraint(
            model_name="meterreport",
            constraint=models.UniqueConstraint(fields=("team", "timestamp"), name="billing_meter_event_once"),
        ),
        migrations.AlterModelOptions(name="meterreport", options={"ordering": ["team", "timestamp"]}),
        migrations.AddField(
            model_name="invoice",
            name="finalized_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When Stripe finalized it: usage reaching the meter later is not on it.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="missed_units",
            field=models.BigIntegerField(
                blank=True,
                help_text="Units of its period that did not reach Stripe's meter before it finalized (reconciliation; "
                "null until checked).",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="invoice", name="missed_checked_at", field=models.DateTimeField(blank=True, null=True)
        ),
    ]
