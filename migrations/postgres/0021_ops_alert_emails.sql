-- A budget alert is emailed to ops (OPS_EMAIL) once: when the mail server took it (emailed_at),
-- or given up with the reason (email_error) when it refused it or may have taken it already.
ALTER TABLE budget_alerts ADD COLUMN emailed_at timestamptz;
ALTER TABLE budget_alerts ADD COLUMN email_error TEXT;
