"""How a run keeps itself: its record on disk (record, callbacks), its budget and milestones, preemption,
the lease on its folder, and the guards that stop a sick run early."""
