"""Hours and days whose rollups must be recomputed from the finer grain (see analytics.aggregation)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("analytics", "0003_relay_batch_btree")]

    operations = [
        migrations.RunSQL(
            """
            CREATE TABLE analytics_dirty_hour (bucket timestamptz PRIMARY KEY);
            CREATE TABLE analytics_dirty_day (bucket timestamptz PRIMARY KEY);
            """,
            "DROP TABLE analytics_dirty_hour, analytics_dirty_day;",
        )
    ]
