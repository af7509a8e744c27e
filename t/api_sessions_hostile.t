#!/usr/bin/perl

# Tests for ngx_http_api_sessions_module: hostile input (docs/design.md, limits).
# Invalid, truncated and deeply nested JSON, invalid UTF-8 and NUL bytes,
# duplicate keys, huge numbers, malformed cookies and escapes, enormous
# headers, bad requests and bodies cut by the client: workers survive, every
# request is recorded with valid JSON, and other requests go on being
# recorded meanwhile.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Select;
use Time::HiRes qw/ sleep time /;

use Test::Nginx;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http proxy map api_sessions/)->plan(63);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=100ms;

    default_type application/json;
    large_client_header_buffers 4 32k;

    log_format ids '$request_id $status';

    map $arg_x $attack {
        evil     sqli;
        default  "";
    }

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        access_log %%TESTDIR%%/access.log ids;
        client_body_buffer_size 128k;
        add_header X-Request-Id $request_id always;

        api_sessions on;
        api_sessions_attack $attack;

        api_sessions_param request_body:/token name=token;
        api_sessions_param request_body:/user/name name=name;
        api_sessions_param request_body:/before name=before;
        api_sessions_param request_body:/num name=num;
        api_sessions_param request_body:/login name=login;
        api_sessions_param request_body:/operation name=operation;
        api_sessions_param response_body:/token name=r_token;
        api_sessions_param $http_x_user type=user name=user;
        api_sessions_param $cookie_sid name=sid;
        api_sessions_param $arg_token name=arg_token;

        location / {
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }

        location /small/ {
            client_body_buffer_size 1k;
            proxy_pass http://127.0.0.1:%%PORT_8081%%;
        }

        location /files/ {
            root %%TESTDIR%%;
        }
    }

    server {
        listen       127.0.0.1:%%PORT_8081%%;
        server_name  backend;

        location / {
            return 200 '{"ok":true}';
        }
    }
}

EOF

mkdir $t->testdir() . '/files';

my %files = (
	'invalid.json' => '{"token": tok-ahead, "x": 1}',
	'truncated.json' => '{"token": "cut-he',
	'deep.json' => '[' x 10000,
	'deep-closed.json' => '{"a":' . ('[' x 10000) . (']' x 10000)
		. ',"token":"after-deep"}',
	'deep-objects.json' => '{"a":' x 10000,
	'nul.json' => qq|{"token":"a\0b","x":"\0"}|,
	'utf8.json' => qq|{"token":"\xff\xfe\xc3(","x":1}|,
	'dup.json' => '{"token":"first","token":"second"}',
	'huge.json' => '{"token":1e999999999}',
	'garbage.json' => join('', map { chr } 0 .. 255) x 10,
);

$t->write_file("files/$_", $files{$_}) for keys %files;

$t->run();

my @workers = $t->worker_pids();

###############################################################################

my $recorded = 0;

sub all_records {
	return $t->wait_records($recorded);
}

sub rec_of {
	my ($path) = @_;
	my @r = grep { $_->{path} eq $path } all_records();
	return $r[0] // {};
}

sub params {
	my ($r) = @_;
	return { map { $_->[0] => $_->[3] } @{$r->{params} // []} };
}

sub post {
	my ($uri, $body, %extra) = @_;
	$recorded++;
	return http_post_json($uri, $body, %extra);
}

###############################################################################

# JSON request bodies

post('/h/invalid', '{token: "bare-key"}');
post('/h/truncated', '{"before": "b-val", "token": "cut-in-the-mid');
post('/h/deep-arrays', '[' x 10000);
post('/h/deep-closed', '{"before":"b-val","a":' . ('[' x 10000)
	. (']' x 10000) . ',"token":"after-deep"}');
post('/h/deep-objects', '{"user":' x 10000);
post('/h/dup', '{"token":"first","user":{"name":"n1"},"token":"second",'
	. '"user":{"name":"n2"}}');
post('/h/huge', '{"num":' . ('9' x 1000) . ',"token":-0.000e-99999}');
post('/h/huge-exp', '{"num":1e999999999}');
post('/h/utf8', qq|{"user":{"name":"a\xffb\xc3("},"token":"\xed\xa0\x80"}|);
post('/h/nul-raw', qq|{"token":"a\0b","before":"b-val"}|);
post('/h/nul-escaped', '{"token":"a\u0000b"}');
post('/h/nul-body', "\0" x 1000);
post('/h/garbage', join('', map { chr } 0 .. 255) x 20);
post('/h/bad-escapes', '{"token":"\uZZZZ\ud800\x\\"}');
post('/h/ctype', '{"token":"t"}', 'Content-Type' => "\xff/\xfe+json; \x01");

my %r = map { $_ => rec_of($_) } qw{ /h/invalid /h/truncated /h/deep-arrays
	/h/deep-closed /h/deep-objects /h/dup /h/huge /h/huge-exp /h/utf8
	/h/nul-raw /h/nul-escaped /h/nul-body /h/garbage /h/bad-escapes
	/h/ctype };

is(join(' ', map { "$_=" . ($r{$_}{status} // 'none') } sort keys %r),
	join(' ', map { "$_=200" } sort keys %r),
	'every hostile body recorded');

is_deeply(params($r{'/h/invalid'}), {}, 'invalid json: params absent');
is_deeply(params($r{'/h/truncated'}), { before => 'b-val' },
	'truncated json: complete value kept, cut value absent');
is_deeply(params($r{'/h/deep-arrays'}), {}, 'deep arrays: params absent');
is(params($r{'/h/deep-closed'})->{before}, 'b-val',
	'deep nesting: value before it kept');
is_deeply(params($r{'/h/deep-objects'}), {}, 'deep objects: params absent');
is_deeply(params($r{'/h/dup'}), { token => 'first', name => 'n1' },
	'duplicate keys: first wins');
is(params($r{'/h/huge'})->{num}, '9' x 1000, 'huge integer verbatim');
is(params($r{'/h/huge'})->{token}, '-0.000e-99999', 'huge exponent verbatim');
is(params($r{'/h/huge-exp'})->{num}, '1e999999999',
	'overflowing number verbatim');
like(params($r{'/h/utf8'})->{name} // '', qr/^a.+\($/,
	'invalid utf-8 value exported as valid text');
is(params($r{'/h/nul-escaped'})->{token}, "a\0b", 'escaped NUL kept');
my $nul = params($r{'/h/nul-raw'})->{token};
ok(!defined $nul || $nul eq "a\0b", 'raw NUL in a JSON string tolerated');
is_deeply(params($r{'/h/nul-body'}), {}, 'NUL body: params absent');
is_deeply(params($r{'/h/garbage'}), {}, 'binary body: params absent');
is_deeply($r{'/h/ctype'}{params}, [], 'bad content type: not parsed');

# forms with malformed escapes, GraphQL with hostile text

post('/h/form', 'login=%zz%4&x=%&token=%e2%82%ac%e2%82&&=&==&%%%',
	'Content-Type' => 'application/x-www-form-urlencoded');
post('/h/form-nul', "login=a%00b\0&token=\xff\xfe",
	'Content-Type' => 'application/x-www-form-urlencoded');
post('/h/graphql-deep', '{' x 10000, 'Content-Type' => 'application/graphql');
post('/h/graphql-bad', "\xff\xfe\0 mutation",
	'Content-Type' => 'application/graphql');
post('/h/graphql-json', '{"query":"' . ('{' x 10000) . '","variables":'
	. ('[' x 10000) . '}');
http_get('/h/graphql-get?query=%ff%00%7B%7B%7B&variables=%7B%7B%7B%zz');
$recorded++;

%r = map { $_ => rec_of($_) } qw{ /h/form /h/form-nul /h/graphql-deep
	/h/graphql-bad /h/graphql-json /h/graphql-get };

is(join(' ', map { "$_=" . ($r{$_}{status} // 'none') } sort keys %r),
	join(' ', map { "$_=200" } sort keys %r), 'forms and graphql recorded');
is(params($r{'/h/form'})->{login}, '%zz%4', 'malformed escapes kept as is');
like(params($r{'/h/form'})->{token} // '', qr/^\x{20ac}/,
	'truncated utf-8 escape tolerated');
is(params($r{'/h/form-nul'})->{login}, "a\0b\0", 'form NUL bytes');
ok(!defined params($r{'/h/graphql-bad'})->{operation},
	'graphql binary: no operation');

###############################################################################

# headers, cookies, arguments

my $r = http("GET /h/hdr-utf8?token=%zz%%41 HTTP/1.0\r\nHost: localhost\r\n"
	. "X-User: \xc3( bad \xff\r\nUser-Agent: \xfe\xff agent\r\n"
	. "Cookie: ;;; =x; sid; ==; sid=\xff\xfe%zz; PHPSESSID\r\n\r\n");
$recorded++;
my $rec = rec_of('/h/hdr-utf8');

is(http_status($r), 200, 'invalid utf-8 headers: status');
like($rec->{user} // '', qr/\( bad .$/, 'invalid utf-8 user header');
like($rec->{user_agent} // '', qr/ agent$/, 'invalid utf-8 user agent');
is(params($rec)->{arg_token}, '%zz%%41', 'malformed escapes in args');
is($rec->{session_key}, 'cookie:sid', 'malformed cookie header: sid found');
ok(defined params($rec)->{sid}, 'malformed cookie value exported as text');

$r = http("GET /h/cookie-junk HTTP/1.0\r\nHost: localhost\r\n"
	. "User-Agent: junk\r\nCookie: ;;; =x; sid; ==; PHPSESSID\r\n"
	. "Cookie: session\r\n\r\n");
$recorded++;
$rec = rec_of('/h/cookie-junk');

is($rec->{session_key}, 'ip+ua', 'cookies without values are not keys');
is_deeply($rec->{params}, [], 'cookies without values: no params');

# many cookies, the session cookie last

my $cookies = join('; ', map { "c$_=v$_" } 1 .. 2500) . '; sid=last-one';
$r = http("GET /h/many-cookies HTTP/1.0\r\nHost: localhost\r\n"
	. "Cookie: $cookies\r\n\r\n");
$recorded++;
$rec = rec_of('/h/many-cookies');

is(http_status($r), 200, 'many cookies: status');
is($rec->{session_key}, 'cookie:sid', 'many cookies: key found');
is(params($rec)->{sid}, 'last-one', 'many cookies: value');

# enormous headers near the limit, and one over it; the ones the record
# carries whole stay a few KB, as every poll of the export file re-reads it

my $huge = 'u' x 32000;
my $user = 'n' x 2000;
$r = http("GET /h/huge-header HTTP/1.0\r\nHost: localhost\r\n"
	. "X-Filler: $huge\r\n"
	. "Authorization: Bearer " . ('a' x 30000) . "\r\n"
	. "X-User: $user\r\n\r\n");
$recorded++;
$rec = rec_of('/h/huge-header');

is(http_status($r), 200, 'huge header: status');
is($rec->{session_key}, 'header:Authorization', 'huge header: key');
like($rec->{key_hash}, qr/^[0-9a-f]{16,}$/, 'huge header: key hashed');
is($rec->{user}, $user, 'long header exported whole');

$r = http("GET /h/too-large-header HTTP/1.0\r\nHost: localhost\r\n"
	. "X-User: $huge$huge\r\n\r\n");
$recorded++;
$rec = rec_of('/h/too-large-header');

is(http_status($r), 400, 'header over the limit: 400');
is($rec->{status}, 400, 'header over the limit: recorded');

# NUL in a header: nginx refuses the request, it is still recorded

$r = http("GET /h/nul-header HTTP/1.0\r\nHost: localhost\r\n"
	. "X-User: a\0b\r\n\r\n");
$recorded++;
$rec = rec_of('/h/nul-header');

is(http_status($r), 400, 'NUL in a header: 400');
is($rec->{status}, 400, 'NUL in a header: recorded');

# invalid utf-8 in the path

$r = http("GET /h/path-\xff\xfe%41 HTTP/1.0\r\nHost: localhost\r\n\r\n");
$recorded++;
($rec) = grep { $_->{path} =~ m!^/h/path-! } all_records();

is(http_status($r), 200, 'invalid utf-8 path: status');
like($rec && $rec->{path}, qr!^/h/path-.+%41$!, 'invalid utf-8 path as text');

# request lines nginx refuses: a NUL escape, not HTTP at all

$r = http("GET /h/refused-%00 HTTP/1.0\r\nHost: localhost\r\n\r\n");
$recorded++;
is(http_status($r), 400, 'NUL escape in the path: 400');

$r = http("\x16\x03\x01\x00\xff garbage\r\n\r\n");
$recorded++;
is(http_status($r), 400, 'garbage request line: 400');

is(scalar(grep { $_->{status} == 400 && $_->{path} !~ m!^/h/! }
	all_records()), 2, 'refused request lines recorded');

# an attack whose content is hostile

my $body = "x\0y\xff\xfe" . ('[' x 2000);
$r = http("POST /h/attack?x=evil HTTP/1.0\r\nHost: localhost\r\n"
	. "X-Bin: \xff\xfe\x01\r\nContent-Type: application/json\r\n"
	. "Content-Length: " . length($body) . "\r\n\r\n", body => $body);
$recorded++;
$rec = rec_of('/h/attack');

is(($rec->{attack} // {})->{type}, 'sqli', 'hostile attack: type');
is(scalar @{$rec->{attack}{request}{headers} // []}, 4,
	'hostile attack: headers');
like($rec->{attack}{request}{body} // '', qr/^x\0y.+\[{2000}$/s,
	'hostile attack: body as text');

###############################################################################

# hostile response bodies

for my $f (sort keys %files) {
	http_get("/files/$f");
	$recorded++;
}

my %resp = map { $_ => scalar rec_of("/files/$_") } keys %files;

is(join(' ', map { "$_=" . ($resp{$_}{status} // 'none') } sort keys %resp),
	join(' ', map { "$_=200" } sort keys %files),
	'every hostile response recorded');

is_deeply([ map { params($resp{$_})->{r_token} } qw/ invalid.json
	truncated.json deep.json deep-objects.json garbage.json / ],
	[ undef, undef, undef, undef, undef ], 'unreadable responses: absent');
is(params($resp{'dup.json'})->{r_token}, 'first', 'response duplicate key');
is(params($resp{'huge.json'})->{r_token}, '1e999999999',
	'response huge number verbatim');
like(params($resp{'utf8.json'})->{r_token} // '', qr/\($/,
	'response invalid utf-8 as text');

###############################################################################

# bodies cut by the client, while other requests go on

my @pending;

for my $n (1 .. 3) {
	my $head = "POST /h/cut-$n HTTP/1.0\r\nHost: localhost\r\n"
		. "Content-Type: application/json\r\n"
		. "Content-Length: 100000\r\n\r\n";
	push @pending, http($head, body => '{"before":"b-val","pad":"'
		. ('p' x 3000), start => 1);

	$head =~ s!/h/cut-!/small/cut-!;
	push @pending, http($head, body => '{"before":"b-val","pad":"'
		. ('p' x 5000), start => 1);
}

my $ok = 0;
for my $n (1 .. 20) {
	$ok++ if http_status(post("/good/$n", '{"token":"good-' . $n . '"}'))
		== 200;
}

is($ok, 20, 'good requests served while bodies hang');

my @good = grep { $_->{path} =~ m!^/good/! } all_records();
is(join(' ', sort map { params($_)->{token} // 'none' } @good),
	join(' ', sort map { "good-$_" } 1 .. 20),
	'good requests recorded while bodies hang');

close $_ for @pending;
$recorded += @pending;

my @cut = grep { $_->{path} =~ m!/cut-! } all_records();
is(scalar @cut, 6, 'cut bodies recorded');

my %status = map { (split / /)[0, 1] } split /\n/, $t->read_file('access.log');
is(join(' ', map { $_->{status} } @cut),
	join(' ', map { $status{$_->{request_id}} // 'none' } @cut),
	'cut bodies: status as in the access log');

# deep nesting on many connections at once, with good requests between

my @deep;
for my $n (1 .. 10) {
	push @deep, http_post_json("/h/deep-par-$n", '[' x 60000, start => 1);
	push @deep, http_post_json("/good/par-$n", '{"token":"par"}',
		start => 1);
}
$recorded += @deep;

my $replies = 0;
for my $s (@deep) {
	$replies++ if http_status(http_end($s)) == 200;
}
is($replies, 20, 'parallel deep bodies served');
is(scalar(grep { $_->{path} =~ m!^/(h/deep|good)/?[-a-z]*par-! }
	all_records()), 20, 'parallel deep bodies recorded');

###############################################################################

# every line valid UTF-8 JSON, nothing lost, no worker lost

my @all = all_records();
is(scalar @all, $recorded, 'one record per request');

my $bad = grep { my $l = $_; !utf8::decode($l) }
	split /\n/, $t->read_file('api_sessions.ndjson');
is($bad, 0, 'every line is valid UTF-8');

is_deeply([ $t->worker_pids() ], \@workers, 'workers still the same');
unlike($t->read_file('error.log'), qr/panick|\[crit\]|\[emerg\]/,
	'no panic in error log');

###############################################################################
