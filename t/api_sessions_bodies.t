#!/usr/bin/perl

# Tests for ngx_http_api_sessions_module: request_body: and response_body:
# sources (JSON, forms, GraphQL), RFC 6901 pointers, bodies in temporary
# files and over api_sessions_body_limit, encoded responses, attack content,
# and the upstream receiving the request body unchanged; a value cut by the
# limit is absent, never its prefix; a deep prefix hides nothing after it.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Uncompress::Gunzip qw/ gunzip $GunzipError /;

use Test::Nginx;
use Test::Receiver;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()
	->has(qw/http proxy map gzip api_sessions/)->plan(106);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=100ms;
    api_sessions_secret secret;

    default_type application/json;

    map $arg_x $attack {
        evil     sqli;
        zero     0;
        default  "";
    }

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        add_header X-Request-Id $request_id always;

        api_sessions on;
        api_sessions_attack $attack;

        api_sessions_param request_body:/user/name name=name;
        api_sessions_param request_body:/items/0/id name=first;
        api_sessions_param request_body:/items/1 name=second;
        api_sessions_param request_body:/a~1b name=slash;
        api_sessions_param request_body:/m~0n name=tilde;
        api_sessions_param request_body:/obj name=obj;
        api_sessions_param request_body:/num name=num;
        api_sessions_param request_body:/flag name=flag;
        api_sessions_param request_body:/before name=before;
        api_sessions_param request_body:/after name=after;
        api_sessions_param request_body:/missing name=missing;

        api_sessions_param response_body:/token name=token;
        api_sessions_param response_body:/user/roles/1 type=role name=role;
        api_sessions_param response_body:/items/0/id name=r_first;
        api_sessions_param response_body:/a~1b name=r_slash;
        api_sessions_param response_body:/m~0n name=r_tilde;
        api_sessions_param response_body:/obj name=r_obj;
        api_sessions_param response_body:/big name=r_big;
        api_sessions_param response_body:/float name=r_float;
        api_sessions_param response_body:/tail name=r_tail;

        location /json {
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /tmpfile {
            client_body_buffer_size 1k;
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /tmpfile-limited {
            client_body_buffer_size 1k;
            api_sessions_body_limit 4k;
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /limited {
            api_sessions_body_limit 4k;
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /unbuffered {
            proxy_request_buffering off;
            proxy_http_version 1.1;
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /form {
            api_sessions_param request_body:/login name=login;
            api_sessions_param request_body:/email name=email;
            api_sessions_param request_body:/note name=note;
            api_sessions_param request_body:/missing name=missing;
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /cut-form {
            api_sessions_body_limit 64;
            api_sessions_key request_body:/token name=token;
            api_sessions_key $http_x_next name=next;
            api_sessions_param request_body:/secret hash name=secret;
            api_sessions_param request_body:/password name=password;
            api_sessions_param request_body:/a name=a;
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /deep {
            api_sessions_key request_body:/token name=token;
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /nobody {
            api_sessions_param $arg_absent;
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /graphql {
            api_sessions_param request_body:/operation name=operation;
            api_sessions_param request_body:/operationName name=operationName;
            api_sessions_param request_body:/variables/id name=id;
            api_sessions_param request_body:/query name=query;
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /resp/ {
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }

        location /resp-limited/ {
            api_sessions_body_limit 4k;
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }

        location /static/ {
            alias %%TESTDIR%%/files/;
        }

        location /static-top/ {
            alias %%TESTDIR%%/files/;
            sendfile on;
            api_sessions_body_limit 8k;
            api_sessions_param response_body:/token name=token;
            api_sessions_param response_body:/items/0/id name=r_first;
        }

        location /resp-spooled/ {
            sendfile on;
            proxy_buffer_size 1k;
            proxy_buffers 2 1k;
            proxy_busy_buffers_size 1k;
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }

        location /static-probe/ {
            alias %%TESTDIR%%/files/;
            sendfile on;
            api_sessions_body_limit 8k;
            api_sessions_param response_body:/flag name=flag;
        }

        location /static-late/ {
            alias %%TESTDIR%%/files/;
            sendfile on;
            api_sessions_body_limit 8k;
            api_sessions_param response_body:/token name=token;
            api_sessions_param response_body:/token2 name=token2;
        }

        location /ret {
            return 200 '{"token":"ret-tok","user":{"roles":["a","b"]}}';
        }

        location /ret-text {
            default_type text/plain;
            return 200 '{"token":"text-tok"}';
        }
    }

    server {
        listen       127.0.0.1:%%PORT_8081%%;
        server_name  backend;

        location / {
            root %%TESTDIR%%/files;
        }

        location /gz/ {
            alias %%TESTDIR%%/files/;
            gzip on;
            gzip_types application/json;
            gzip_min_length 0;
            gzip_http_version 1.0;
        }
    }
}

EOF

my $resp = <<'EOF';
{
  "token": "tok-123",
  "user": {"name": "u", "roles": ["reader", "admin"]},
  "items": [{"id": "i-1"}, {"id": "i-2"}],
  "a/b": "slash-v",
  "m~n": "tilde-v",
  "obj": {"k": [1, 2, {"x": null}], "s": "t\"q"},
  "big": 123456789012345678901234567890,
  "float": -1.50e+3,
  "tail": "end"
}
EOF

my $big = '{"token":"big-tok","pad":"' . ('y' x 10000) . '","tail":"end"}';

$t->write_file('secret', 'k' x 32);
mkdir $t->testdir() . '/files';
$t->write_file('files/resp.json', $resp);
$t->write_file('files/big.json', $big);
my $top = '{"token":"top-tok","items":[{"id":7},{"id":8}],"pad":"'
	. ('p' x 20000) . '","token2":"late"}';
$t->write_file('files/top.json', $top);

# `true` ends exactly where a probe of a sendfile response stops (the first one
# of 512 bytes, or the second of 4 KB): what follows decides whether it is a
# value; the files are longer than the probes
for my $probe (512, 4096) {
	for my $after (', "more": 1, "tail": "' . ('t' x 5000) . '"}',
			'x, "more": 1, "tail": "' . ('t' x 5000) . '"}') {
		my $head = '{"flag": true';
		my $pad = '{"pad": "' . ('f' x ($probe - length($head) - 11)) . '", ';
		my $body = $pad . substr($head, 1) . $after;
		die 'probe file' unless substr($body, 0, $probe) =~ /"flag": true\z/;
		$t->write_file(($after =~ /^x/ ? 'files/probe-bad' : 'files/probe-ok')
			. "-$probe.json", $body);
	}
}

my $rcv = Test::Receiver->new(port => port(8090));

$t->run();

###############################################################################

my $recorded = 0;

sub record {
	my ($reply) = @_;

	my $id = http_header($reply, 'X-Request-Id') // 'none';
	my ($r) = grep { $_->{request_id} eq $id }
		$t->wait_records($recorded);

	return $r // {};
}

sub params {
	my ($r) = @_;
	return { map { $_->[0] => $_->[3] } @{$r->{params} // []} };
}

sub post {
	my ($uri, $type, $body, %extra) = @_;
	$recorded++;
	return http_post_json($uri, $body, 'Content-Type' => $type, %extra);
}

# Long bodies compared without dumping them on failure.
sub same {
	my ($got, $expected, $name) = @_;

	return 1 if ok(defined $got && $got eq $expected, $name);

	my $at = 0;
	$at++ while defined $got && $at < length $got
		&& substr($got, $at, 1) eq substr($expected, $at, 1);

	diag('got ' . (defined $got ? length($got) . ' bytes' : 'undef')
		. ', expected ' . length($expected) . " bytes, differ at $at");
	return 0;
}

sub upstream_body {
	my @r = $rcv->requests();
	return @r ? $r[-1]{body} : undef;
}

###############################################################################

# JSON request bodies

my $json = '{"user": {"name": "alice", "id": 7}, "items": [{"id": "x1"}, '
	. '"two"], "a/b": "slash", "m~n": "tilde", '
	. '"obj": {"k": [1, 2.50, true], "e": {}}, '
	. '"num": 12345678901234567890123456789, "flag": true}';

my $r = post('/json', 'application/json', $json);
is(http_status($r), 200, 'json post');
my $rec = record($r);

is_deeply(params($rec), {
	name => 'alice', first => 'x1', second => 'two', slash => 'slash',
	tilde => 'tilde', obj => '{"k":[1,2.50,true],"e":{}}',
	num => '12345678901234567890123456789', flag => 'true',
}, 'json: pointers, escapes, compact objects, numbers as text');
ok(!exists $rec->{truncated}, 'json: not truncated');
same(upstream_body(), $json, 'json: upstream got the body');

$r = post('/json', 'application/vnd.x+json; charset=utf-8',
	'{"user": {"name": "vnd"}}');
is(params(record($r))->{name}, 'vnd', '+json content type');

$r = post('/json', 'text/plain', '{"user": {"name": "plain"}}');
is_deeply(params(record($r)), {}, 'text/plain body not parsed as JSON');

$r = post('/json', 'application/json', '{"user": {"name": "a\u00e9\n\"q\""}}');
is(params(record($r))->{name}, "a\x{e9}\n\"q\"", 'json string unescaped');

# urlencoded forms

my $form = 'login=alice&email=a%40b.example&note=hello+world+%2B1&x=y';
$r = post('/form', 'application/x-www-form-urlencoded', $form);
$rec = record($r);

is_deeply(params($rec), { login => 'alice', email => 'a@b.example',
	note => 'hello world +1' }, 'form fields decoded');
same(upstream_body(), $form, 'form: upstream got the body');

# GraphQL

my $gql = '{"query": "mutation Login($id: ID!) { login(id: $id) { token } }", '
	. '"operationName": "Login", "variables": {"id": "42"}}';
$r = post('/graphql', 'application/json', $gql);
$rec = record($r);

is_deeply(params($rec), {
	operation => 'mutation Login', operationName => 'Login', id => '42',
	query => 'mutation Login($id: ID!) { login(id: $id) { token } }',
}, 'graphql json: /operation, /operationName, /variables/id, /query');

$r = post('/graphql', 'application/graphql', 'query GetUser { user { id } }');
$rec = record($r);

is(params($rec)->{query}, 'query GetUser { user { id } }',
	'application/graphql: /query');
is(params($rec)->{operation}, 'query GetUser',
	'application/graphql: /operation');
same(upstream_body(), 'query GetUser { user { id } }',
	'application/graphql: upstream got the body');

$r = http_get('/graphql?query=query%20Order(%24id%3A%20ID)%20%7B%20order'
	. '(id%3A%20%24id)%20%7B%20total%20%7D%20%7D'
	. '&variables=%7B%22id%22%3A%22o-9%22%7D');
$recorded++;
$rec = record($r);

is(params($rec)->{operation}, 'query Order', 'graphql get: /operation');
is(params($rec)->{id}, 'o-9', 'graphql get: /variables/id');
is($rec->{method}, 'GET', 'graphql get: method');

$r = post('/graphql', 'application/json', '{"query": "{ me { id } }"}');
is(params(record($r))->{operation}, 'query', 'anonymous graphql operation');

###############################################################################

# a body in a temporary file

my $pad = 'x' x 20000;
my $long = qq|{"before": "b-val", "pad": "$pad", "after": "a-val"}|;

$r = post('/tmpfile', 'application/json', $long);
$rec = record($r);

is(http_status($r), 200, 'temp file: status');
like($t->read_file('error.log'),
	qr/client request body is buffered to a temporary file/,
	'temp file: body was buffered to a file');
is_deeply(params($rec), { before => 'b-val', after => 'a-val' },
	'temp file: body parsed');
ok(!exists $rec->{truncated}, 'temp file: not truncated');
same(upstream_body(), $long, 'temp file: upstream got the body unchanged');

# a body in a temporary file, over the limit, with an attack

$r = post('/tmpfile-limited?x=evil', 'application/json', $long);
$rec = record($r);

my $got = ($rec->{attack} // {})->{request}{body} // '';
ok($got eq substr($long, 0, 4096), 'temp file: attack body up to the limit')
	or diag('got ' . length($got) . ' bytes');
is_deeply([ params($rec)->{before}, @{$rec->{truncated} // []} ],
	[ 'b-val', 'request_body' ], 'temp file: over the limit');
same(upstream_body(), $long, 'temp file: attack upstream body');

# a body over api_sessions_body_limit

my $over = qq|{"before": "b-val", "pad": "| . ('z' x 8000)
	. qq|", "after": "a-val"}|;

$r = post('/limited', 'application/json', $over);
$rec = record($r);

is(http_status($r), 200, 'over limit: status');
is_deeply($rec->{truncated}, [ 'request_body' ], 'over limit: truncated');
is(params($rec)->{before}, 'b-val', 'over limit: value before the limit');
ok(!exists params($rec)->{after}, 'over limit: value beyond the limit absent');
same(upstream_body(), $over, 'over limit: upstream got the whole body');

$r = post('/tmpfile', 'application/json', $over);
$rec = record($r);
is_deeply([ @{$rec->{truncated} // []}, params($rec)->{after} ],
	[ 'a-val' ], 'within the default limit: whole body');

# proxy_request_buffering off

$r = post('/unbuffered', 'application/json', $json);
$rec = record($r);

is(http_status($r), 200, 'unbuffered: status');
is(params($rec)->{name}, 'alice', 'unbuffered: body parsed');
same(upstream_body(), $json, 'unbuffered: upstream got the body');

$r = post('/unbuffered', 'application/json', $long);
$rec = record($r);

is(params($rec)->{after}, 'a-val', 'unbuffered, temp file: body parsed');
same(upstream_body(), $long, 'unbuffered, temp file: upstream got the body');

# chunked request body

my $chunked = "POST /unbuffered HTTP/1.1\r\nHost: localhost\r\n"
	. "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
	. "Connection: close\r\n\r\n";
my @parts = ('{"user": {"na', 'me": "chunky"}, "after"', ': "a-val"}');
my $chunks = join('', map { sprintf("%x\r\n%s\r\n", length, $_) } @parts)
	. "0\r\n\r\n";

$r = http($chunked, body => $chunks);
$recorded++;
$rec = record($r);

is(http_status($r), 200, 'chunked: status');
is_deeply(params($rec), { name => 'chunky', after => 'a-val' },
	'chunked: body parsed');
same(upstream_body(), join('', @parts), 'chunked: upstream got the body');

$r = http($chunked =~ s/unbuffered/json/r, body => $chunks);
$recorded++;
is(params(record($r))->{name}, 'chunky', 'chunked, buffered: body parsed');
same(upstream_body(), join('', @parts), 'chunked, buffered: upstream body');

###############################################################################

# response bodies

my $resp_params = {
	token => 'tok-123', role => 'admin', r_first => 'i-1',
	r_slash => 'slash-v', r_tilde => 'tilde-v',
	r_obj => '{"k":[1,2,{"x":null}],"s":"t\"q"}',
	r_big => '123456789012345678901234567890', r_float => '-1.50e+3',
	r_tail => 'end',
};

$r = http_get('/resp/resp.json');
$recorded++;
$rec = record($r);

is(http_content($r), $resp, 'proxied response untouched');
is_deeply(params($rec), $resp_params, 'proxied response parsed');
is($rec->{role}, 'admin', 'role from the response');
ok(!exists $rec->{truncated}, 'proxied response not truncated');

$r = http_get('/static/resp.json');
$recorded++;
$rec = record($r);

is(http_content($r), $resp, 'static response untouched');
is_deeply(params($rec), $resp_params, 'static file response parsed');

$r = http_get('/ret');
$recorded++;
$rec = record($r);

is_deeply(params($rec), { token => 'ret-tok', role => 'b' },
	'return response parsed');

$r = http_get('/ret-text');
$recorded++;
is_deeply(params(record($r)), {}, 'text/plain response not parsed');

# response over the limit

$r = http_get('/resp-limited/big.json');
$recorded++;
$rec = record($r);

is(http_content($r), $big, 'response over the limit untouched');
is_deeply($rec->{truncated}, [ 'response_body' ], 'response truncated');
is_deeply(params($rec), { token => 'big-tok' },
	'response: value before the limit kept, beyond it absent');

$r = http_get('/resp/big.json');
$recorded++;
$rec = record($r);

is_deeply(params($rec), { token => 'big-tok', r_tail => 'end' },
	'response within the default limit parsed');
ok(!exists $rec->{truncated}, 'response within the limit not truncated');

$r = http_get('/static/big.json');
$recorded++;
$rec = record($r);

is_deeply([ params($rec)->{r_tail}, @{$rec->{truncated} // []} ], [ 'end' ],
	'static big response parsed');

# a file whose first bytes decide every pointer is not read to the limit: the
# values are those of the whole, and nothing is cut that mattered

$r = http_get('/static-top/top.json');
$recorded++;
$rec = record($r);

is(http_content($r), $top, 'static file decided early untouched');
is_deeply([ params($rec), $rec->{truncated} // 'absent' ], [ { token => 'top-tok', r_first => 7 }, 'absent' ],
	'static file decided by its first bytes');

# a proxied response spooled to a temporary file reaches the filter as many file
# buffers: probed once, the rest read as it comes

$r = http_get('/resp-spooled/big.json');
$recorded++;
$rec = record($r);

is(http_content($r), $big, 'spooled response untouched');
is_deeply([ params($rec), $rec->{truncated} // 'absent' ], [ { token => 'big-tok', r_tail => 'end' }, 'absent' ],
	'spooled response parsed whole');

# a literal at the end of the probe decides nothing: the bytes after it do

for my $probe (512, 4096) {
	$r = http_get("/static-probe/probe-ok-$probe.json");
	$recorded++;
	is(params(record($r))->{flag}, 'true',
		"probe of $probe bytes: a literal the next byte ends");

	$r = http_get("/static-probe/probe-bad-$probe.json");
	$recorded++;
	is_deeply(params(record($r)), {},
		"probe of $probe bytes: a literal the next byte spoils");
}

# the same file where a pointer is undecided in the first bytes: read up to the
# limit, then cut

$r = http_get('/static-late/top.json');
$recorded++;
$rec = record($r);

is_deeply(params($rec), { token => 'top-tok' },
	'undecided static file: value before the limit, none beyond');
is_deeply($rec->{truncated}, [ 'response_body' ], 'undecided static file truncated');

# gzip-encoded upstream response

$r = http(<<EOF);
GET /resp/gz/resp.json HTTP/1.0
Host: localhost
Accept-Encoding: gzip

EOF
$recorded++;
$rec = record($r);

is(http_header($r, 'Content-Encoding'), 'gzip', 'gzip response');
my $plain;
gunzip(\http_content($r) => \$plain) or diag($GunzipError);
is($plain, $resp, 'gzip response untouched');
is(http_status($r), 200, 'gzip status');
is_deeply([ params($rec), $rec->{truncated} // 'absent' ], [ {}, 'absent' ],
	'gzip response not parsed');

###############################################################################

# attacks

my $head = "POST /limited?x=evil&y=1 HTTP/1.0\r\n"
	. "Host: localhost\r\n"
	. "X-First: one\r\n"
	. "Content-Type: application/json\r\n"
	. "x-dup: a\r\n"
	. "X-Dup: b\r\n"
	. "User-Agent: attack-test\r\n"
	. "Content-Length: " . length($over) . "\r\n\r\n";

$r = http($head, body => $over);
$recorded++;
$rec = record($r);

is(http_status($r), 200, 'attack: status');
my $a = $rec->{attack} // {};

is($a->{type}, 'sqli', 'attack type');
is($a->{request}{line}, 'POST /limited?x=evil&y=1 HTTP/1.0', 'attack line');
is_deeply($a->{request}{headers}, [
	[ 'Host', 'localhost' ], [ 'X-First', 'one' ],
	[ 'Content-Type', 'application/json' ], [ 'x-dup', 'a' ],
	[ 'X-Dup', 'b' ], [ 'User-Agent', 'attack-test' ],
	[ 'Content-Length', length($over) ],
], 'attack headers: all, in order, as sent');
$got = $a->{request}{body} // '';
ok($got eq substr($over, 0, 4096), 'attack body up to the limit')
	or diag('got ' . length($got) . ' bytes');
ok($a->{request}{body_truncated}, 'attack body_truncated');
is(JSON::PP::is_bool($a->{request}{body_truncated}), 1,
	'body_truncated is a boolean');
is_deeply($rec->{truncated}, [ 'request_body' ], 'attack: truncated');
same(upstream_body(), $over, 'attack: upstream got the whole body');

$r = post('/json?x=evil', 'application/json', $json);
$rec = record($r);
$a = $rec->{attack} // {};

is($a->{type}, 'sqli', 'small attack type');
is($a->{request}{body}, $json, 'small attack body');
ok(defined $a->{request}{body_truncated} && !$a->{request}{body_truncated},
	'small attack not truncated');
is(params($rec)->{name}, 'alice', 'attack request still parsed');

$r = http_get('/resp/resp.json?x=evil');
$recorded++;
$rec = record($r);
$a = $rec->{attack} // {};

is($a->{type}, 'sqli', 'attack without a body');
is($a->{request}{body}, '', 'attack without a body: empty body');
is($a->{request}{line}, 'GET /resp/resp.json?x=evil HTTP/1.0',
	'attack without a body: line');
is(params($rec)->{token}, 'tok-123', 'attack without a body: response parsed');

$r = http_get('/ret?x=evil');
$recorded++;
is(record($r)->{attack}{type}, 'sqli', 'attack on a return response');

for my $q ('x=zero', 'x=other', '') {
	$r = post("/json?$q", 'application/json', $json);
	$rec = record($r);
	ok(!exists $rec->{attack}, "no attack: '$q'");
}

# a location without body sources still reads the body for an attack

my $mid = '{"pad": "' . ('m' x 3000) . '"}';
$head =~ s!/limited!/nobody!;
$head =~ s!Content-Length: \d+!'Content-Length: ' . length($mid)!e;

$r = http($head, body => $mid);
$recorded++;
$rec = record($r);

is($rec->{attack}{request}{body}, $mid,
	'attack body read without body sources');
is_deeply($rec->{params}, [], 'location without body sources: params');
same(upstream_body(), $mid, 'location without body sources: upstream body');

###############################################################################

# a form cut by the limit (64 bytes): the field at the cut has no value, not
# the start of one

my $fpad = 'a=' . ('p' x 38);
my $form_type = 'application/x-www-form-urlencoded';

# cut inside the token: the session falls through to the next key
my ($t1, $t2) = map { "$fpad&token=tok-shared-prefix-$_" } 'one', 'two';
is(substr($t1, 0, 64), "$fpad&token=tok-shared-prefix",
	'cut form: the cut is inside the token');
my @cut = map { record(post('/cut-form', $form_type, $_, 'X-Next' => 'n1')) }
	$t1, $t2;
is_deeply([ map { $_->{session_key} } @cut ], [ 'next', 'next' ],
	'cut form: a cut token is no key, the next key is');
is($cut[0]{key_hash}, $cut[1]{key_hash},
	'cut form: keyed by the next key, not by the shared prefix');
is_deeply($cut[0]{truncated}, [ 'request_body' ], 'cut form: truncated');

# the same token whole, within the limit, keys the session
my $whole = record(post('/cut-form', $form_type, 'token=tok-whole&a=1',
	'X-Next' => 'n1'));
is($whole->{session_key}, 'token', 'whole form: the token is the key');

# a hash parameter cut the same way is absent
$r = post('/cut-form', $form_type, "$fpad&secret=" . ('s' x 40));
$rec = record($r);
is_deeply([ sort map { $_->[0] } @{$rec->{params}} ], [ 'a' ],
	'cut form: a cut hash parameter is absent, the whole one before kept');
unlike(join(',', map { $_->[3] } @{$rec->{params}}), qr/hmac-sha256/,
	'cut form: no HMAC of a prefix');

# a name cut short: "passwordx" at the cut is not "password"
my $name_cut = 'a=' . ('q' x 53) . '&passwordx=v';
is(substr($name_cut, 0, 64), 'a=' . ('q' x 53) . '&password',
	'cut form: the cut is inside the name');
$rec = record(post('/cut-form', $form_type, $name_cut));
is_deeply(params($rec), { a => 'q' x 53 },
	'cut form: no phantom value for a name cut short');

# a deep prefix cannot hide a request_body: token

my $deep = '{"deep": ' . ('[' x 300) . '1' . (']' x 300)
	. ', "pad": {"x": ' . ('{"y": ' x 200) . '0' . ('}' x 200)
	. '}, "token": "deep-tok"}';
my @deep = map { record(post('/deep', 'application/json', $_)) }
	$deep, '{"token": "deep-tok"}';
is_deeply([ map { $_->{session_key} } @deep ], [ 'token', 'token' ],
	'deep prefix: the token after it is the key');
is($deep[0]{key_hash}, $deep[1]{key_hash},
	'deep prefix: the same session as the token alone');

###############################################################################

# nothing was lost or doubled

is(scalar($t->wait_records($recorded)), $recorded, 'one record per request');
is(scalar(grep { $_->{path} eq '/limited' } $t->records()), 2,
	'records by path');

###############################################################################
