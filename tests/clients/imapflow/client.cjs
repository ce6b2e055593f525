// imapflow (https://imapflow.com), a real Node.js IMAP client, against smimeproxy: it connects with its
// defaults (STARTTLS when offered, the proxy's certificate trusted), lists, fetches envelope, bodyStructure and
// source, downloads a part, searches the body text and IDLEs while another session appends. Driven by
// cmd/smimeproxy/clients_test.go (TestClientImapflow), which checks the JSON it prints; imapflow comes from the
// npm ci cache of scripts/setup.sh (NODE_PATH).
//
// usage: node client.cjs '{"host":..,"port":..,"user":..,"pass":..,"ca":"proxy.pem","word":"...","part":"1"}'
'use strict';
const fs = require('fs');
const { ImapFlow } = require('imapflow');

const spec = JSON.parse(process.argv[2]);

function client() {
  return new ImapFlow({
    host: spec.host,
    port: spec.port,
    secure: false, // STARTTLS, imapflow's default for a non-993 port when the server offers it
    auth: { user: spec.user, pass: spec.pass },
    tls: { ca: [fs.readFileSync(spec.ca)], minVersion: 'TLSv1.2' },
    logger: false,
    connectionTimeout: 20000,
    greetingTimeout: 20000,
    socketTimeout: 60000,
  });
}

function withTimeout(p, ms, what) {
  let timer;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(what + ': no answer in ' + ms + ' ms')), ms); }),
  ]);
}

async function streamText(stream) {
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

async function main() {
  const out = {};
  const c = client();
  await withTimeout(c.connect(), 30000, 'connect');
  out.secure = c.secureConnection || false; // true once STARTTLS upgraded the socket
  out.tls = typeof c.socket.getProtocol === 'function' ? c.socket.getProtocol() : null;
  out.capabilities = [...c.capabilities.keys()];
  out.mailboxes = (await c.list()).map((m) => m.path);
  const lock = await c.getMailboxLock('INBOX');
  try {
    out.messages = [];
    for await (const m of c.fetch('1:*', { uid: true, envelope: true, bodyStructure: true, source: true })) {
      out.messages.push({
        uid: m.uid,
        subject: m.envelope.subject,
        from: (m.envelope.from || []).map((a) => a.address),
        type: m.bodyStructure.type,
        parts: (m.bodyStructure.childNodes || []).map((n) => n.type),
        source: m.source.toString('utf8'),
      });
    }
    const target = out.messages.find((m) => m.source.includes(spec.word));
    if (target) {
      const { content } = await c.download(String(target.uid), spec.part, { uid: true });
      out.part = await streamText(content);
      out.partUID = target.uid;
    }
    out.search = await c.search({ body: spec.word }, { uid: true });

    // IDLE: a second session appends; the first, idling, must hear of it.
    const heard = new Promise((resolve) => c.on('exists', (d) => resolve(d.count)));
    const idling = c.idle();
    await new Promise((r) => setTimeout(r, 500));
    const other = client();
    await withTimeout(other.connect(), 30000, 'second connect');
    await other.append('INBOX', 'From: idle@example.org\r\nSubject: idle wakeup\r\n\r\nnew mail while idling\r\n');
    await other.logout();
    out.idleExists = await withTimeout(heard, 20000, 'EXISTS during IDLE');
    await withTimeout(c.noop(), 20000, 'NOOP after IDLE'); // ends IDLE (DONE)
    await withTimeout(idling, 20000, 'IDLE end');
  } finally {
    lock.release();
  }
  await c.logout();
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write('imapflow: ' + (err && err.stack ? err.stack : String(err)) + '\n');
  process.exit(1);
});
