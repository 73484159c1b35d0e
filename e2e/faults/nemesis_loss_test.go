package faults

import (
	"context"
	"os"
	"testing"
	"time"
)

// The loss rule must drop about its share of packets each way (numgen
// leaves a host-order number: compared wrongly it would drop all or
// none), read back as set, and nothing once its table is deleted.
func TestLossRuleDropsItsShare(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	a, b := linkedNetns(t, "pfla", "pflb", "10.77.0")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := dropShare(b, "eth0", 50); err != nil {
		t.Fatal(err)
	}
	got, err := lossRules(b)
	if err != nil || got["input"] != 50 || got["output"] != 50 {
		t.Fatalf("rules read back = %v (%v); want 50 %% both ways", got, err)
	}
	sent, ok, err := pingLoss(ctx, a, "10.77.0.2", 200)
	if err != nil {
		t.Fatal(err)
	}
	// 50 % each way loses 75 % of round trips; 200 pings: σ ≈ 3 %.
	if lost := sent - ok; sent != 200 || lost < 110 || lost > 185 {
		t.Fatalf("with 50 %% dropped each way %d of %d pings were lost; want about 150", lost, sent)
	}
	t.Logf("50 %% each way: %d of %d pings lost (expected %.0f %%)", sent-ok, sent, 100*expectedRoundTrip(50))
	if err := clearLoss(b); err != nil {
		t.Fatal(err)
	}
	if got, err := lossRules(b); err != nil || len(got) != 0 {
		t.Fatalf("rules after the heal = %v (%v); want none", got, err)
	}
	if pr, err := measureLoss(ctx, a, "10.77.0.2", 0); err != nil {
		t.Fatalf("after the heal: %v (%s)", err, pr)
	}
	if err := dropShare(b, "eth0", 100); err == nil {
		t.Error("a share of 100 % was accepted")
	}
}
