"""The Hokusai site database: schema, migrations, the unit of work and the event outbox."""
