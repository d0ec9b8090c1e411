"""An agent process for the uploader's crash test: records usage events with UsageUploader
and uploads them. test_uploader.py SIGKILLs it mid-upload and starts it again on the same spool.

Usage: python usage_agent.py URL LICENSE_KEY SPOOL_DIR N_NEW_EVENTS
Prints JSON lines: {"recorded": n, "pending": p} once recorded, then {"acked": a, "pending": p}
as acks arrive, and {"drained": true, …} when the spool is empty.
"""
import json
import sys
import time

from licensd_client import Client, UsageUploader

url, license_key, spool, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def say(**fields):
    print(json.dumps(fields), flush=True)


uploader = UsageUploader(Client(url), spool, license_key=license_key, batch_size=25, max_in_flight=2, idle_close=0.5)
recovered = uploader.pending
for i in range(count):
    # Quantities vary so the summary's sum, not only its event count, shows each event landed once.
    uploader.record("tokens", 1 + i % 7, {"n": str(i)}, agent_id="crash-agent")
say(recorded=count, recovered=recovered, pending=uploader.pending)
uploader.start()
last = None
while uploader.pending:
    acked = uploader.accepted + uploader.duplicates + uploader.rejected
    if acked != last:
        say(acked=acked, accepted=uploader.accepted, duplicates=uploader.duplicates, pending=uploader.pending)
        last = acked
    time.sleep(0.01)
say(drained=True, accepted=uploader.accepted, duplicates=uploader.duplicates, rejected=uploader.rejected)
uploader.stop()
