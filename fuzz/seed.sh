#!/usr/bin/env bash
# Seeds the fuzz corpora (fuzz/corpus/TARGET/, not committed): our own captures in
# testdata/, the vendor captures from ../shared/fixtures when that folder is there (they are
# not copied into this repository), and short seeds of our own in the same wire formats.
set -euo pipefail
cd "$(dirname "$0")"
fx=../../shared/fixtures
c=corpus
mkdir -p $c/{multipart,http_response,xml,onvif_events,jpeg,rtsp,dahua,config,envelope,buffer_frames,digest,camtime,wsdiscovery,topics,urls,station_rows,release_manifest,update_state}
put() { printf '%b' "$2" > "$c/$1/seed-$3"; }
if [ -d "$fx" ]; then
  cp "$fx"/*.multipart $c/multipart/ 2>/dev/null || true
  for f in "$fx"/*.xml; do cp "$f" $c/xml/; cp "$f" $c/onvif_events/; done
  cp "$fx"/wsdiscovery_*.xml $c/wsdiscovery/
  cp "$fx"/rtsp_*.txt $c/rtsp/
  cp "$fx"/dahua_http_401_www_authenticate.txt $c/http_response/
  grep -h -i '^www-authenticate:' "$fx"/*.txt | sed 's/^[^:]*: *//' > $c/digest/seed-fixtures || true
else
  echo "fuzz/seed.sh: $fx absent: own seeds only"
fi
# Our own captures (testdata/, always there).
td=../testdata
cp $td/*.multipart $c/multipart/
for f in $td/*.xml; do cp "$f" $c/xml/; cp "$f" $c/onvif_events/; done
cp $td/wsdiscovery_*.xml $c/wsdiscovery/
cp $td/rtsp_*.txt $c/rtsp/
cp $td/dahua_http_401.txt $c/http_response/
grep -h -i '^www-authenticate:' $td/*.txt | sed 's/^[^:]*: *//' > $c/digest/seed-testdata
put multipart '--boundary\r\nContent-Type: application/xml\r\nContent-Length: 40\r\n\r\n<EventNotificationAlert><eventType>VMD\r\n--boundary\r\n' 1
put multipart '--myboundary\r\nContent-Type: text/plain\r\nContent-Length:36\r\n\r\nCode=VideoMotion;action=Start;index=0\r\n\r\n--myboundary\r\n' 2
put http_response 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello' 1
put http_response 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n' 2
put http_response 'HTTP/1.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm="x", nonce="n", qop="auth"\r\n\r\n' 3
put rtsp 'RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 4\r\n\r\nabcd$\x00\x00\x04\x80\x60\x00\x01' 1
put dahua 'Code=VideoMotion;action=Start;index=0;data={"Id":[0]}' 1
put dahua 'Code=TimeChange;action=Pulse;index=0' 2
put digest 'Digest realm="Login to 3L0E", qop="auth", nonce="1234", opaque="x", algorithm=SHA-256, Basic realm="y"' 1
put topics 'camgw/q1-p05/gw03/camera/cam01/health' 1
put topics 'camgw/q1-p05/gw03/cmd/result' 2
put urls 'http://192.0.2.1/onvif-http/snapshot?Profile_1' 1
put urls 'rtsp://[fe80::1]:554/Streaming/Channels/101?transportmode=unicast' 2
put urls 'v=0\r\nm=video 0 RTP/AVP 96\r\na=control:trackID=0\r\n' 3
put topics 'camgw/q1-p05/gw03/camera/cam01/snapshot/01234567-89ab-cdef-0123-456789abcdef' 4
put topics 'camgw/w/g/alert' 3
put station_rows 'camgw/q1-p05/gw03/event
{"id":"e1","seq":7,"ts":"2026-12-02T01:02:03.000Z","clock_synced":true,"kind":"motion","camera":"cam01","source":"ingest","state":"start"}' 1
put station_rows 'camgw/q1-p05/gw03/camera/cam01/health
{"camera":"cam01","state":"down","problems":["unreachable"],"since":"2026-12-02T01:00:00Z","ts":"2026-12-02T01:00:00Z"}' 2
put release_manifest '{"version":"0.2.0","target":"x86_64-unknown-linux-gnu","sha256":"0707070707070707070707070707070707070707070707070707070707070707","size":1234,"signature":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}' 1
put station_rows 'camgw/q1-p05/gw03/alert
{"id":"a1","seq":3,"ts":"2026-12-02T01:00:00Z","clock_synced":false,"kind":"camera_down","camera":"cam01","detail":{"problems":["unreachable"]}}' 3
put camtime '2019-02-20T15:22:34-8:00' 1
put camtime '2009-11-14T15:27Z' 2
put envelope '{"v":1,"cmd":"eyJpZCI6ImEifQ==","sig":"AAAA"}' 1
put xml '<s:Envelope><s:Body><tds:GetSystemDateAndTimeResponse><tt:UTCDateTime><tt:Time><tt:Hour>1</tt:Hour></tt:Time><tt:Date><tt:Year>2024</tt:Year></tt:Date></tt:UTCDateTime></tds:GetSystemDateAndTimeResponse></s:Body></s:Envelope>' 1
put onvif_events '<e><NotificationMessage><Topic>tns1:RuleEngine/CellMotionDetector/Motion</Topic><Message><Message UtcTime="2024-01-01T00:00:00Z" PropertyOperation="Changed"><Data><SimpleItem Name="IsMotion" Value="true"/></Data></Message></Message></NotificationMessage></e>' 1
put wsdiscovery '<e><RelatesTo>urn:uuid:1</RelatesTo><ProbeMatches><ProbeMatch><Address>urn:x</Address><Types>dn:NetworkVideoTransmitter</Types><XAddrs>http://10.0.0.5/onvif/device_service</XAddrs></ProbeMatch></ProbeMatches></e>' 1
put config '[gateway]\nid = "gw"\nward = "w"\ndata_dir = "/tmp/x"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n[[camera]]\nid = "cam01"\nvendor = "hikvision"\nhost = "10.0.0.5"\nrtsp_url = "rtsp://admin:Fuzz-S3cret@10.0.0.5:554/x"\nsnapshot_url = "http://admin:Fuzz-S3cret@10.0.0.5/s.jpg"\n' 1
# A buffer segment's frames: mark C4 6D 67 77, then junk the fuzzer grows into frames.
put buffer_frames '\xc4\x6d\x67\x77\x05\x00\x00\x00\x00\x00\x00\x00hello' 1
# Our own stills (baseline and progressive JPEG), committed under fuzz/seeds/.
cp seeds/jpeg/* $c/jpeg/
put jpeg '\xff\xd8\xff\xe0\x00\x10JFIF\x00' 3
put update_state '{"versions":[{"version":"0.2.0","file":"versions/0.2.0/camgw","sha256":"07","state":"confirmed","from":"0.1.0","starts":1,"failed_starts":0,"last_failure":null,"reported":true},{"version":"0.3.0","file":"versions/0.3.0/camgw","state":"trial","from":"0.2.0","starts":1,"failed_starts":1,"last_failure":"did not connect","reported":false}]}' 1
