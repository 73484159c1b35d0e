package nodetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"github.com/peerstack/peerstack/consensus/statedb"
	"github.com/peerstack/peerstack/rest"
)

// dashEnv is one host with fake agents, a seeded image and a headless
// Chromium driving its dashboard.
type dashEnv struct {
	t     testing.TB
	c     *Cluster
	hc    *http.Client
	token string
	ctx   context.Context
	shots string
}

func newDashEnv(t testing.TB) *dashEnv {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (make deps installs chromium and chromium-driver): %v", err)
	}
	fa := &FakeAgents{}
	c := NewCluster(t, 1, Options{Agent: fa.Options})
	e := &dashEnv{t: t, c: c, hc: c.HTTPClient(), token: c.AdminToken(0), shots: t.ArtifactDir()}
	t.Logf("screenshots in %s", e.shots)
	n := c.Node(0)
	p, _ := n.State().ProjectByName("admin")
	img := n.NewID()
	for _, step := range []struct {
		typ     statedb.CmdType
		payload any
	}{
		{statedb.CmdCreateImage, statedb.Image{ID: img, Name: "guest", ProjectID: p.ID, Visibility: "public", DiskFormat: "qcow2", ContainerFormat: "bare"}},
		{statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: img, HostID: n.ID()}},
		{statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: img, Size: 1 << 20, VirtualSize: 1 << 20,
			SHA256: strings.Repeat("cd", 32), Holders: []string{n.ID()}}},
	} {
		if _, err := rest.Propose(adminContext(t.Context(), t, n), n, step.typ, step.payload); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(t.Context(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	e.ctx = ctx
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return e
}

// run runs browser actions with a deadline, failing the test on error. A
// node that a redraw replaced between being found and being used (the
// views redraw on every pushed state change, as a user would see) is
// looked up again: the actions did nothing yet. Chromium words it "Could
// not find node with given id" or "No node with given id found".
func (e *dashEnv) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	err := chromedp.Do(ctx, actions...)
	for try := 0; err != nil && strings.Contains(err.Error(), "ode with given id") && try < 5; try++ {
		time.Sleep(100 * time.Millisecond)
		err = chromedp.Do(ctx, actions...)
	}
	if err != nil {
		body, _ := chromedp.Run(e.ctx, chromedp.Evaluate[string](`document.body.innerText`))
		e.t.Fatalf("%s: %v\npage text: %s", what, err, body)
	}
}

// fill sets form fields by id, all in one step of the page as a user's
// typing is: the views redraw on every pushed state change, and a value
// set on a copy a redraw just replaced would be lost (the redraw carries
// what is in the live fields, by id, into the new copy).
func (e *dashEnv) fill(what string, idValues ...string) {
	e.t.Helper()
	b, _ := json.Marshal(idValues)
	js := fmt.Sprintf(`(() => { const kv = %s; for (let i = 0; i < kv.length; i += 2) {
		const x = document.getElementById(kv[i]); if (!x) return false; x.value = kv[i+1]; } return true; })()`, b)
	if !eval[bool](e, what, js) {
		e.t.Fatalf("%s: a field is missing: %v", what, idValues)
	}
}

// click presses and releases the mouse over the element css selects, as a
// user does: its place is measured in the page in one step (a redraw may
// replace the node at any time, never its place), then the mouse goes
// there. The dashboard holds its redraws while a button is down.
func (e *dashEnv) click(what, css string) {
	e.t.Helper()
	e.waitJS(what+": shown", fmt.Sprintf(`(() => { const x = document.querySelector(%q); return !!x && x.offsetParent !== null && !x.disabled; })()`, css))
	pos := eval[[]float64](e, what+": place", fmt.Sprintf(`(() => { const x = document.querySelector(%q); x.scrollIntoView({block: "center"});
		const r = x.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()`, css))
	if len(pos) != 2 {
		e.t.Fatalf("%s: place of %s = %v", what, css, pos)
	}
	e.run(what, chromedp.MouseClickXY(pos[0], pos[1]))
}

// eval evaluates a JavaScript expression and decodes its value.
func eval[T any](e *dashEnv, what, expr string, opts ...chromedp.EvaluateOption) T {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// waitJS polls a JavaScript condition until it is true.
func (e *dashEnv) waitJS(what, expr string) {
	e.t.Helper()
	e.run(what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(45*time.Second)))
}

func (e *dashEnv) shot(name string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		e.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(e.shots, name+".png"), buf, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *dashEnv) login(user, password, project string) {
	e.t.Helper()
	e.run("log in as "+user,
		chromedp.WaitVisible(chromedp.ID("login-user")),
		chromedp.SetValue(chromedp.ID("login-user"), user),
		chromedp.SetValue(chromedp.ID("login-password"), password),
		chromedp.SetValue(chromedp.ID("login-project"), project),
		chromedp.Click(chromedp.ID("login-submit")))
}

// api calls the API with the admin token.
func (e *dashEnv) api(method, path string, body any) map[string]any {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, e.c.URL(0)+path, rd)
	req.Header.Set("X-Auth-Token", e.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		e.t.Fatalf("%s %s = %d %s", method, path, resp.StatusCode, raw)
	}
	out := map[string]any{}
	_ = json.Unmarshal(raw, &out)
	return out
}

func mainText(expr string) string {
	return fmt.Sprintf(`document.querySelector("#main").innerText.includes(%q)`, expr)
}

func TestDashboardBrowser(t *testing.T) {
	e := newDashEnv(t)
	e.run("open", chromedp.Navigate(e.c.URL(0)+"/"))

	// A wrong password shows the API's message where the user acted.
	e.login("admin", "not-the-password", "admin")
	e.waitJS("login error shown", `document.querySelector("#login-error").textContent.length > 0`)
	msg := eval[string](e, "read login error", `document.querySelector("#login-error").textContent`)
	if !strings.Contains(strings.ToLower(msg), "auth") {
		t.Fatalf("login error = %q; want the identity API's authentication message", msg)
	}
	e.shot("login-error")

	e.login("admin", e.c.AdminPassword, "admin")
	e.waitJS("hosts view", mainText("Hosts")+` && document.querySelector(".bar") !== null`)
	cookieJS := eval[string](e, "cookies", `document.cookie`)
	if strings.Contains(cookieJS, "peerstack_session") || !strings.Contains(cookieJS, "peerstack_csrf") {
		t.Fatalf("document.cookie = %q; want the CSRF cookie only (session cookie HttpOnly)", cookieJS)
	}
	e.shot("hosts")

	// Create a network with a subnet.
	e.run("networks view", chromedp.Navigate(e.c.URL(0)+"/#networks"))
	e.waitJS("network form", `document.querySelector("#network-name") !== null`)
	e.fill("network fields", "network-name", "net1", "network-cidr", "10.9.0.0/24")
	e.click("create network", "#network-create")
	e.waitJS("network listed", mainText("10.9.0.0/24"))
	// The form is emptied once the network exists, even when a redraw
	// came in between (the press holds one back until the release).
	if got := eval[string](e, "network form after create", `document.querySelector("#network-name").value + "|" + document.querySelector("#network-cidr").value`); got != "|" {
		t.Fatalf("network form after the create = %q; want it empty", got)
	}
	e.shot("networks")

	// A change without the CSRF header is refused even with the cookie;
	// the same request with it goes through.
	status := eval[int](e, "post without csrf", `fetch("/network/v2.0/networks", {method: "POST", headers: {"Content-Type": "application/json"},
		body: JSON.stringify({network: {name: "nocsrf"}})}).then(r => r.status)`, chromedp.EvalAwaitPromise)
	if status != http.StatusForbidden {
		t.Fatalf("POST without CSRF token = %d; want 403", status)
	}
	for _, nw := range e.api("GET", "/network/v2.0/networks", nil)["networks"].([]any) {
		if nw.(map[string]any)["name"] == "nocsrf" {
			t.Fatal("a network was created without a CSRF token")
		}
	}

	// Create a server on it and watch it become ACTIVE without a reload.
	e.run("servers view", chromedp.Navigate(e.c.URL(0)+"/#servers"))
	e.waitJS("server form", `document.querySelector("#server-network") !== null && document.querySelector("#server-network").options.length > 1`)
	eval[bool](e, "mark page", `window.notReloaded = true`)
	if !eval[bool](e, "pick network", `(() => { const s = document.querySelector("#server-network");
			for (const o of s.options) if (o.text === "net1") s.value = o.value; return s.value !== ""; })()`) {
		t.Fatal("net1 is not offered in the server form")
	}
	e.fill("server name", "server-name", "web1")
	e.click("create server", "#server-create")
	e.waitJS("event stream open", `document.body.dataset.events === "open"`)
	e.waitJS("server ACTIVE", `window.notReloaded === true && (document.querySelector('[data-server="web1"]') || {}).textContent === "ACTIVE"`)
	e.shot("servers")
	if unlabeled := eval[[]string](e, "labels", `[...document.querySelectorAll("#main input, #main select, #main button")]
		.filter(x => !(x.labels && x.labels.length) && !x.getAttribute("aria-label") && !x.textContent.trim()).map(x => x.outerHTML)`); len(unlabeled) > 0 {
		t.Fatalf("controls without a label: %v", unlabeled)
	}

	// A redraw keeps what is being typed and where the focus is.
	n := eval[int](e, "type a draft", `(() => { const x = document.querySelector("#server-name"); x.value = "draft"; x.focus();
		return Number(document.body.dataset.redraws); })()`)
	e.waitJS("two redraws", fmt.Sprintf(`Number(document.body.dataset.redraws) > %d`, n+1))
	if got := eval[string](e, "draft kept", `document.querySelector("#server-name").value + "|" + document.activeElement.id`); got != "draft|server-name" {
		t.Fatalf("after redraws: value|focus = %q; want draft|server-name", got)
	}
	eval[bool](e, "clear draft", `(document.querySelector("#server-name").value = "", document.activeElement.blur(), true)`)

	// The console streams the boot marker.
	e.click("open console", `button[aria-label="Console web1"]`)
	e.waitJS("boot marker in console", `(document.querySelector("#terminal .xterm-rows") || {textContent: ""}).textContent.includes("PEERSTACK-BOOT")`)
	// Keystrokes reach the guest's console and its answer comes back.
	// Typed as a browser does for a user: text input, then Enter.
	// (chromedp.SendKeys sends each key as keyDown with text plus char,
	// which xterm.js takes as two keystrokes.)
	e.run("type into console", chromedp.Focus(chromedp.CSS(`#terminal textarea`)), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, input.InsertText, input.InsertTextParams{Text: "uname"}); err != nil {
			return err
		}
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
			if _, err := cdp.Call(ctx, tg, input.DispatchKeyEvent, input.DispatchKeyEventParams{Type: typ, Key: "Enter", Code: "Enter",
				WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13}); err != nil {
				return err
			}
		}
		return nil
	}))
	e.waitJS("typed line answered", `(document.querySelector("#terminal .xterm-rows") || {textContent: ""}).textContent.includes("you typed: uname")`)
	e.shot("console")

	// A volume: create, attach to the server, detach.
	e.run("volumes view", chromedp.Navigate(e.c.URL(0)+"/#volumes"))
	e.waitJS("volume form", `document.querySelector("#volume-name") !== null`)
	e.fill("volume name", "volume-name", "vol1")
	e.click("create volume", "#volume-create")
	e.waitJS("volume available", `[...document.querySelectorAll("#main tr")].some(r => r.innerText.includes("vol1") && r.innerText.includes("available"))`)
	e.click("attach", `select[aria-label="Server to attach vol1"] ~ button`)
	e.waitJS("volume in-use", `[...document.querySelectorAll("#main tr")].some(r => r.innerText.includes("vol1") && r.innerText.includes("in-use") && r.innerText.includes("web1"))`)
	e.shot("volumes-attached")
	e.click("detach", `button[aria-label="Detach vol1"]`)
	e.waitJS("volume detached", `[...document.querySelectorAll("#main tr")].some(r => r.innerText.includes("vol1") && r.innerText.includes("available"))`)

	// An image upload shows its progress.
	file := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(file, bytes.Repeat([]byte{0x5a}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	e.run("images view", chromedp.Navigate(e.c.URL(0)+"/#images"))
	e.waitJS("image form", `document.querySelector("#image-name") !== null`)
	e.fill("image fields", "image-name", "uploaded", "image-format", "raw")
	// Once a file is chosen the view stops redrawing until it is sent; a
	// choice that landed on a copy a redraw replaced is made again.
	for try := 0; ; try++ {
		e.run("choose file", chromedp.SetUploadFiles(chromedp.ID("image-file"), []string{file}))
		if eval[bool](e, "file chosen", `document.querySelector("#image-file").files.length === 1`) {
			break
		}
		if try == 5 {
			t.Fatal("the chosen file never stayed in the image form")
		}
	}
	if got := eval[string](e, "image fields kept", `document.querySelector("#image-name").value + "|" + document.querySelector("#image-format").value`); got != "uploaded|raw" {
		t.Fatalf("image form = %q; want uploaded|raw", got)
	}
	e.click("upload image", "#image-upload")
	e.waitJS("image active", `[...document.querySelectorAll("#main tr")].some(r => r.innerText.includes("uploaded") && r.innerText.includes("active"))
		&& document.querySelector("#image-progress").value === 100`)
	e.run("back to servers", chromedp.Navigate(e.c.URL(0)+"/#servers"))
	e.waitJS("servers again", `document.querySelector('[data-server="web1"]') !== null`)

	// Stop it; the console log still shows for the stopped server.
	e.click("stop", `button[aria-label="Stop web1"]`)
	e.waitJS("server SHUTOFF", `(document.querySelector('[data-server="web1"]') || {}).textContent === "SHUTOFF"`)
	e.click("log", `button[aria-label="Log web1"]`)
	e.waitJS("console log of stopped server", `(document.querySelector("pre.log") || {textContent: ""}).textContent.includes("PEERSTACK-BOOT")`)
	e.shot("console-log-stopped")

	// Delete it.
	eval[bool](e, "auto-confirm", `(window.confirm = () => true, true)`)
	e.click("delete", `button[aria-label="Delete web1"]`)
	e.waitJS("server gone", `document.querySelector('[data-server="web1"]') === null && `+mainText("Servers"))

	for _, v := range []string{"images", "volumes", "cluster"} {
		e.run(v+" view", chromedp.Navigate(e.c.URL(0)+"/#"+v))
		e.waitJS(v+" rendered", fmt.Sprintf(`document.querySelector("#main h1") && document.querySelector("#main h1").textContent.toLowerCase() === %q`, v))
		e.shot(v)
	}
	e.click("join token", "#join-token-create")
	e.waitJS("join token shown", `document.querySelector("#join-token").value.length > 10`)

	// Logout revokes the token behind the cookie.
	got, err := chromedp.Run(e.ctx, chromedp.Action[network.GetCookiesResult](func(ctx context.Context, tg *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{})
	}))
	if err != nil {
		t.Fatalf("read cookies: %v", err)
	}
	var session string
	for _, c := range got.Cookies {
		if c.Name == "peerstack_session" {
			session = c.Value
			if !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict {
				t.Fatalf("session cookie = %+v; want HttpOnly, Secure, SameSite=Strict", c)
			}
		}
	}
	if session == "" {
		t.Fatal("no session cookie")
	}
	e.run("logout", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-user")))
	req, _ := http.NewRequest("GET", e.c.URL(0)+"/compute/v2.1/servers", nil)
	req.Header.Set("X-Auth-Token", session)
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token after logout = %d; want 401", resp.StatusCode)
	}

	// A non-admin sees only its project.
	proj := e.api("POST", "/identity/v3/projects", map[string]any{"project": map[string]any{"name": "demo", "domain_id": "default"}})["project"].(map[string]any)["id"].(string)
	user := e.api("POST", "/identity/v3/users", map[string]any{"user": map[string]any{"name": "alice", "password": "alice-secret-1", "domain_id": "default", "default_project_id": proj}})["user"].(map[string]any)["id"].(string)
	var member string
	for _, r := range e.api("GET", "/identity/v3/roles", nil)["roles"].([]any) {
		if r.(map[string]any)["name"] == "member" {
			member = r.(map[string]any)["id"].(string)
		}
	}
	e.api("PUT", "/identity/v3/projects/"+proj+"/users/"+user+"/roles/"+member, nil)
	e.login("alice", "alice-secret-1", "demo")
	e.waitJS("alice logged in", `document.querySelector("#who").textContent.includes("alice")`)
	e.run("alice networks", chromedp.Navigate(e.c.URL(0)+"/#networks"))
	e.waitJS("alice network view", `document.querySelector("#network-name") !== null`)
	text := eval[string](e, "alice text", `document.querySelector("#main").innerText`)
	if strings.Contains(text, "net1") || strings.Contains(text, "10.9.0.0/24") {
		t.Fatalf("alice sees the admin project's network:\n%s", text)
	}
	e.run("alice hosts", chromedp.Navigate(e.c.URL(0)+"/#hosts"))
	e.waitJS("hosts hidden from alice", mainText("shown to administrators"))
	e.shot("non-admin")

	// On a phone the page does not scroll sideways: wide tables scroll in
	// their own box.
	e.run("phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(e.c.URL(0)+"/#servers"))
	e.waitJS("phone servers view", `document.querySelector("#server-name") !== null`)
	if w := eval[[]int](e, "widths", `[document.documentElement.scrollWidth, window.innerWidth]`); w[0] > w[1] {
		t.Fatalf("page is %d px wide in a %d px phone viewport", w[0], w[1])
	}
	e.shot("phone-servers")
}

// TestDashboardConsoleCLI asks the real openstack client for a serial
// console URL from the host that does not run the server, then reads the
// boot marker through that URL: the console crosses hosts.
func TestDashboardConsoleCLI(t *testing.T) {
	fa := &FakeAgents{}
	c := NewCluster(t, 2, Options{Agent: fa.Options})
	n := c.Node(0)
	p, _ := n.State().ProjectByName("admin")
	img := n.NewID()
	for _, step := range []struct {
		typ     statedb.CmdType
		payload any
	}{
		{statedb.CmdCreateImage, statedb.Image{ID: img, Name: "guest", ProjectID: p.ID, Visibility: "public", DiskFormat: "qcow2", ContainerFormat: "bare"}},
		{statedb.CmdStartImageUpload, statedb.ImageUploadCmd{ID: img, HostID: n.ID()}},
		{statedb.CmdFinishImageUpload, statedb.FinishImageUploadCmd{ID: img, Size: 1 << 20, VirtualSize: 1 << 20,
			SHA256: strings.Repeat("cd", 32), Holders: []string{n.ID(), c.Node(1).ID()}}},
	} {
		if _, err := rest.Propose(adminContext(t.Context(), t, n), n, step.typ, step.payload); err != nil {
			t.Fatalf("seed: %v", err)
		}
	}
	e := &dashEnv{t: t, c: c, hc: c.HTTPClient(), token: c.AdminToken(0)}
	id := e.api("POST", "/compute/v2.1/servers", map[string]any{"server": map[string]any{
		"name": "cli1", "imageRef": img, "flavorRef": "1", "networks": "none"}})["server"].(map[string]any)["id"].(string)
	var host string
	c.Eventually(60*time.Second, "server ACTIVE", func() bool {
		inst, ok := n.State().Instance(id)
		host = inst.Host
		return ok && inst.VMState == statedb.VMActive
	})
	other := 0
	if host == c.Node(0).ID() {
		other = 1
	}
	t.Logf("server on %s; asking host %d (%s)", host, other, c.Node(other).ID())
	cli := newCPCLI(t, c, other)
	var out map[string]string
	cli.json(&out, "console", "url", "show", "--serial", "cli1")
	u := out["url"]
	if !strings.HasPrefix(u, "wss://"+c.Node(other).APIAddr()+"/dashboard/console?token=") || out["type"] != "serial" {
		t.Fatalf("console url show --serial = %v; want a wss:// URL on host %d", out, other)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: e.hc})
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	defer conn.CloseNow()
	var got strings.Builder
	for !strings.Contains(got.String(), "PEERSTACK-BOOT hostname=cli1") {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read console (so far %q): %v", got.String(), err)
		}
		got.Write(msg)
	}
	t.Logf("read %q through %s", got.String(), u[:strings.Index(u, "?")])

	// The console is interactive across hosts: typing goes through this
	// host's internal mTLS attach to the host that runs the server. (Until
	// the session has attached, typing is dropped: type again.)
	msgs := make(chan string, 16)
	go func() {
		defer close(msgs)
		for {
			_, msg, err := conn.Read(ctx)
			if err != nil {
				return
			}
			msgs <- string(msg)
		}
	}()
	got.Reset()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for !strings.Contains(got.String(), "you typed: uname") {
		if err := conn.Write(ctx, websocket.MessageText, []byte("uname\r")); err != nil {
			t.Fatalf("type: %v", err)
		}
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("console closed before the answer (so far %q)", got.String())
			}
			got.WriteString(m)
		case <-tick.C:
		}
	}
}
