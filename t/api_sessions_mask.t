#!/usr/bin/perl

# Tests for ngx_http_api_sessions_module: credentials in the content of
# malicious requests are masked.  Values of grouping keys and hash parameters,
# the Authorization, Proxy-Authorization, Cookie and Set-Cookie values, and what
# api_sessions_mask names, are replaced by keyed hashes in the request line,
# headers and body; everything else is kept byte for byte, and no raw value
# appears anywhere in the exported records.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::Receiver;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http proxy map api_sessions/)->plan(25);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=100ms;
    api_sessions_secret secret;

    map $arg_x $attack {
        evil     sqli;
        default  "";
    }

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        add_header X-Request-Id $request_id always;

        api_sessions on;
        api_sessions_attack $attack;
        api_sessions_body_limit 256;

        api_sessions_key $arg_token name=token;
        api_sessions_key request_body:/session name=session;
        api_sessions_param request_body:/password hash name=password;
        api_sessions_mask header:X-Api-Key;

        location / {
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }

        location /other {
            api_sessions_mask header:X-Other arg:code;
            proxy_pass http://127.0.0.1:%%PORT_8090%%;
        }
    }
}

EOF

$t->write_file('secret', 'k' x 32);

my $rcv = Test::Receiver->new(port => port(8090));

$t->run();

###############################################################################

my $recorded = 0;

sub record {
	my ($reply) = @_;

	$recorded++;
	my $id = http_header($reply, 'X-Request-Id') // 'none';
	my ($r) = grep { $_->{request_id} eq $id } $t->wait_records($recorded);

	return $r // {};
}

sub request {
	my ($r) = @_;
	return ($r->{attack} // {})->{request} // {};
}

sub header {
	my ($r, $name) = @_;
	my ($h) = grep { $_->[0] eq $name } @{request($r)->{headers} // []};
	return $h ? $h->[1] : undef;
}

sub param {
	my ($r, $name) = @_;
	my ($p) = grep { $_->[0] eq $name } @{$r->{params} // []};
	return $p ? $p->[3] : undef;
}

my $key = qr/hmac-sha256:[0-9a-f]{32}/;
my $hmac = qr/hmac-sha256:[0-9a-f]{64}/;

###############################################################################

# a token in the request line, credentials in headers

my $r = http(<<EOF);
GET /api?x=evil&token=tok-query-secret-1&page=2 HTTP/1.0
Host: localhost
Authorization: Bearer bearer-secret-2
Cookie: sid=cookie-secret-3; theme=dark-secret
X-Api-Key: api-key-secret-4
Referer: https://app.example/?token=tok-query-secret-1
X-Plain: kept as sent

EOF
my $rec = record($r);

is($rec->{session_key}, 'token', 'line: keyed by the query token');
is(request($rec)->{line},
	"GET /api?x=evil&token=hmac-sha256:$rec->{key_hash}&page=2 HTTP/1.0",
	'line: the token replaced by its key hash, the rest as sent');
like(header($rec, 'Authorization'), qr/^Bearer $key$/,
	'Authorization: the scheme kept, the credentials hashed');
like(header($rec, 'Cookie'), qr/^sid=$key; theme=$hmac$/,
	'Cookie: each value hashed, the names kept');
like(header($rec, 'X-Api-Key'), qr/^$hmac$/, 'api_sessions_mask header');
is(header($rec, 'Referer'),
	"https://app.example/?token=hmac-sha256:$rec->{key_hash}",
	'the token elsewhere in the content: the same hash');
is(header($rec, 'X-Plain'), 'kept as sent', 'other headers kept');
is(header($rec, 'Host'), 'localhost', 'Host kept');

# a password and a session in a JSON body

my $json = '{"user": "alice", "password": "hunter2-json", '
	. '"session": "body-session-5", "n": [1, 2]}';
$r = http_post_json('/api?x=evil', $json);
$rec = record($r);

my $password = param($rec, 'password');
is($rec->{session_key}, 'session', 'json: keyed by the body session');
like($password, qr/^$hmac$/, 'json: the password parameter is hashed');
is(request($rec)->{body}, '{"user": "alice", "password": "' . $password
	. '", "session": "hmac-sha256:' . $rec->{key_hash} . '", "n": [1, 2]}',
	'json: the password and the session masked in place, the rest as sent');

# a password in a form body

my $form = 'user=alice&password=hunter2-form&note=a+b%21';
$r = http_post_json('/api?x=evil', $form,
	'Content-Type' => 'application/x-www-form-urlencoded');
$rec = record($r);

$password = param($rec, 'password');
like($password, qr/^$hmac$/, 'form: the password parameter is hashed');
is(request($rec)->{body}, "user=alice&password=$password&note=a+b%21",
	'form: the password masked in place, the rest as sent');

# a password cut by the body limit is hidden up to the cut

my $long = '{"pad": "' . ('z' x 200) . '", "password": "hunter2-cut-'
	. ('c' x 100) . '"}';
$r = http_post_json('/api?x=evil', $long);
$rec = record($r);

is(request($rec)->{body_truncated}, 1, 'cut: the body is truncated');
like(request($rec)->{body},
	qr/^\{"pad": "z{200}", "password": "$hmac$/,
	'cut: the cut password masked up to the cut');
is(param($rec, 'password'), undef, 'cut: no parameter from a cut value');

# api_sessions_mask is replaced per level; the defaults stay

$r = http(<<EOF);
GET /other?x=evil&code=oauth-code-6 HTTP/1.0
Host: localhost
Proxy-Authorization: Basic cHJveHktc2VjcmV0LTc=
X-Other: other-secret-8
X-Api-Key: not-masked-here

EOF
$rec = record($r);

like(request($rec)->{line}, qr!^GET /other\?x=evil&code=$hmac HTTP/1.0$!,
	'api_sessions_mask arg');
like(header($rec, 'Proxy-Authorization'), qr/^Basic $hmac$/,
	'Proxy-Authorization masked by default');
like(header($rec, 'X-Other'), qr/^$hmac$/, 'the location\'s mask');
is(header($rec, 'X-Api-Key'), 'not-masked-here',
	'the inherited mask list replaced');

# a request that is not an attack carries no content

$r = http_get('/api?token=tok-plain-secret-9');
$rec = record($r);
ok(!exists $rec->{attack}, 'no attack, no content');

###############################################################################

# no raw value anywhere in what was exported

is(scalar($t->wait_records($recorded)), $recorded, 'one record per request');
my $all = $t->read_file('api_sessions.ndjson');

my @raw = qw/ tok-query-secret-1 bearer-secret-2 cookie-secret-3 dark-secret
	api-key-secret-4 hunter2-json body-session-5 hunter2-form hunter2-cut
	oauth-code-6 cHJveHktc2VjcmV0LTc other-secret-8 tok-plain-secret-9 /;
is_deeply([ grep { index($all, $_) >= 0 } @raw ], [],
	'no raw credential in the records');
like($all, qr/not-masked-here/, 'unmasked values are exported');

# the upstream got the request as sent

my @sent = $rcv->requests();
is(scalar(grep { ($_->{body} // '') eq $form } @sent), 1,
	'the upstream got the form body unmasked');

###############################################################################
