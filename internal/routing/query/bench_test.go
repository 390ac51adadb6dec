package query

import (
	"testing"
	"time"

	"github.com/tetherhub/tether/internal/message"
)

// fourClause is spec 9.6's first two examples joined: two system and two application property
// clauses, one through as_number.
const fourClause = "$contentEncoding = 'UTF-8' AND processingPath = 'hot' AND messageType = 'alerts' AND as_number(severity) <= 2"

func benchMessage() *message.Message {
	return &message.Message{
		MessageID: "m-1", ContentType: "application/json", ContentEncoding: "UTF-8",
		ConnectionDeviceID: "dev-1", EnqueuedTime: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		Properties: map[string]string{"processingPath": "hot", "messageType": "alerts", "severity": "2", "Status": "Active"},
		Body:       []byte(`{"Weather":{"Temperature":50,"IsEnabled":true,"Location":{"State":"WA"},"HistoricalData":[{"Month":"Feb","Temperature":40},{"Month":"Jan","Temperature":30}]}}`),
	}
}

func benchEval(b *testing.B, src string) {
	q := MustCompile(src)
	in := MessageInput(benchMessage(), nil)
	if !q.Matches(in) {
		b.Fatalf("%s does not match", src)
	}
	b.ReportAllocs()
	for b.Loop() {
		q.Matches(in)
	}
}

func BenchmarkEvalFourClause(b *testing.B) { benchEval(b, fourClause) }

func BenchmarkEvalOneClause(b *testing.B) { benchEval(b, "$connectionDeviceId = 'dev-1'") }

func BenchmarkEvalCaseInsensitiveApp(b *testing.B) {
	benchEval(b, "PROCESSINGPATH = 'hot' AND status = 'Active'")
}

// BenchmarkEvalBodyDecoded measures body paths on an already decoded body (every route after
// the first one that reads the body).
func BenchmarkEvalBodyDecoded(b *testing.B) {
	benchEval(b, "$body.Weather.Temperature > 40 AND $body.Weather.HistoricalData[0].Month = 'Feb'")
}

// BenchmarkEvalBodyFresh includes the per-message cost: adapter and JSON decoding.
func BenchmarkEvalBodyFresh(b *testing.B) {
	q := MustCompile("$contentEncoding = 'UTF-8' AND $body.Weather.Temperature > 40")
	m := benchMessage()
	b.ReportAllocs()
	for b.Loop() {
		if !q.Matches(MessageInput(m, nil)) {
			b.Fatal("no match")
		}
	}
}

func BenchmarkCompileFourClause(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(fourClause); err != nil {
			b.Fatal(err)
		}
	}
}
