;;; test-ob-chat-ai.el --- ERT tests for ob-chat-ai  -*- lexical-binding: t; -*-

;;; Commentary:

;; Real `chat-ai' blocks in real Org buffers, run through the real helper
;; against the loopback chat server (tests/loopback_server.py), which the
;; tests start and which reports every request it receives.
;;
;; Run with: emacs -Q --batch -L . -l tests/test-ob-chat-ai.el \
;;             -f ert-run-tests-batch-and-exit
;; CHAT_AI_TEST_PYTHON names the Python that has the helper installed
;; (default: .venv/bin/python in the repository).

;;; Code:

;; The usage log and the prices of the helpers these tests run are their own.
(setenv "XDG_STATE_HOME" (make-temp-file "chat-ai-test-state" t))
(setenv "XDG_CONFIG_HOME" (make-temp-file "chat-ai-test-config" t))

(require 'ert)
(require 'ob-chat-ai)

(defconst ob-chat-ai-test-root
  (file-name-directory
   (directory-file-name (file-name-directory (or load-file-name buffer-file-name))))
  "The repository root.")

(defconst ob-chat-ai-test-python
  (expand-file-name (or (getenv "CHAT_AI_TEST_PYTHON") ".venv/bin/python")
                    ob-chat-ai-test-root)
  "The Python with the helper and its dependencies installed.")

(defconst ob-chat-ai-test-key "sk-test-0123456789abcdefSECRET"
  "A made-up API key that must never show up anywhere but the request.")

(defvar ob-chat-ai-test-server nil
  "The loopback server process.")

(defvar ob-chat-ai-test-base-url nil
  "The base URL of the loopback server.")

;;;; The loopback server

(defun ob-chat-ai-test-server ()
  "Start the loopback server unless it runs, and return its base URL."
  (unless (process-live-p ob-chat-ai-test-server)
    (let ((buffer (generate-new-buffer " *loopback server*")))
      (setq ob-chat-ai-test-server
            (make-process
             :name "loopback-server"
             :buffer buffer
             :command (list ob-chat-ai-test-python
                            (expand-file-name "tests/loopback_server.py"
                                              ob-chat-ai-test-root))
             :coding 'utf-8-unix
             :noquery t
             :connection-type 'pipe
             :stderr (get-buffer-create " *loopback server stderr*")))
      (with-current-buffer buffer
        (with-timeout (30 (error "The loopback server did not start"))
          (while (not (string-match "\\`{\"port\": \\([0-9]+\\)}\n" (buffer-string)))
            (accept-process-output ob-chat-ai-test-server 0.1)))
        (setq ob-chat-ai-test-base-url
              (format "http://127.0.0.1:%s/v1" (match-string 1 (buffer-string))))
        (erase-buffer))))
  ob-chat-ai-test-base-url)

(defun ob-chat-ai-test-control (command)
  "Send COMMAND, \"release\" or \"hold\", to the server; wait until it is done.
Held replies (model `held') stop halfway until the test releases them."
  (let ((buffer (process-buffer ob-chat-ai-test-server))
        (done (format "{\"control\": \"%s\"}\n" command)))
    (with-current-buffer buffer
      ;; Output only ever goes at the end, before any marker there.
      (let ((start (point-max)))
        (process-send-string ob-chat-ai-test-server (concat command "\n"))
        (with-timeout (60 (error "The server did not %s" command))
          (while (not (save-excursion
                        (goto-char start)
                        (search-forward done nil t)))
            (accept-process-output ob-chat-ai-test-server 0.05)))))))

(defun ob-chat-ai-test-release ()
  "Let the replies the server holds go on, and those that come later."
  (ob-chat-ai-test-control "release"))

(defun ob-chat-ai-test-received (&optional count)
  "Return the requests the server received, waiting until there are COUNT."
  (let ((buffer (process-buffer ob-chat-ai-test-server))
        (requests nil))
    (with-timeout (60 (error "The server received %d requests, not %d"
                             (length requests) count))
      (while (progn
               (setq requests
                     (seq-remove
                      (lambda (request) (assq 'control request))
                      (mapcar (lambda (line)
                                (json-parse-string line :object-type 'alist
                                                   :null-object nil))
                              (split-string (with-current-buffer buffer
                                              (buffer-string))
                                            "\n" t))))
               (< (length requests) (or count 0)))
        (accept-process-output ob-chat-ai-test-server 0.05)))
    requests))

(defun ob-chat-ai-test-body (&optional request)
  "Return the JSON body of REQUEST, or of the only request received."
  (alist-get 'body (or request (car (ob-chat-ai-test-received 1)))))

;;;; Running blocks

(defmacro ob-chat-ai-test-with-org (text &rest body)
  "Run BODY in an Org buffer holding TEXT, isolated, with the server running.
Point is at the start of the buffer; the server's record is cleared;
keys, base URLs and providers files of the environment and of
auth-source are hidden, and $OPENAI_BASE_URL is the server's."
  (declare (indent 1) (debug t))
  `(let* ((base-url (ob-chat-ai-test-server))
          (process-environment
           (append
            (list (concat "OPENAI_BASE_URL=" base-url)
                  (concat "CHAT_AI_PROVIDERS_FILE="
                          (expand-file-name "no-such-providers.json"
                                            temporary-file-directory)))
            (seq-remove
             (lambda (entry)
               (string-match-p "\\`\\(OPENAI_\\|AZURE_OPENAI_\\|CHAT_AI_LOCAL_\\|CHAT_AI_MODEL=\\|CHAT_AI_PROVIDERS_FILE=\\)" entry))
             process-environment)))
         (auth-sources nil)
         (auth-source-do-cache nil)
         (org-confirm-babel-evaluate nil)
         (ob-chat-ai-helper-command
          (list ob-chat-ai-test-python "-m" "chat_ai_helper" "--serve")))
     (ignore base-url)
     (ob-chat-ai-test-control "hold")
     (with-current-buffer (process-buffer ob-chat-ai-test-server)
       (erase-buffer))
     (with-temp-buffer
       (org-mode)
       (insert ,text)
       (goto-char (point-min))
       ,@body)))

(defun ob-chat-ai-test-run ()
  "Execute the first chat-ai block and return its result as Babel reads it."
  (goto-char (point-min))
  (re-search-forward "^#\\+begin_src chat-ai")
  (org-babel-execute-src-block)
  (ob-chat-ai-test-result))

(defun ob-chat-ai-test-result ()
  "Return the result of the block at point, nil when there is none."
  (save-excursion
    (let ((where (org-babel-where-is-src-block-result)))
      (when where
        (goto-char where)
        (org-babel-read-result)))))

(defun ob-chat-ai-test-wait (condition)
  "Wait until CONDITION returns non-nil, handling process output meanwhile."
  (with-timeout (60 (error "Gave up waiting for %S" condition))
    (while (not (funcall condition))
      (accept-process-output nil 0.02))))

(defun ob-chat-ai-test-shown ()
  "Return the text of the current buffer as it shows, overlay strings included."
  (let ((text (buffer-string))
        (overlays (sort (seq-filter (lambda (overlay) (overlay-get overlay 'after-string))
                                    (overlays-in (point-min) (point-max)))
                        (lambda (a b) (> (overlay-end a) (overlay-end b))))))
    (dolist (overlay overlays)
      (let ((at (- (overlay-end overlay) (point-min))))
        (setq text (concat (substring text 0 at)
                           (substring-no-properties (overlay-get overlay 'after-string))
                           (substring text at)))))
    text))

(defun ob-chat-ai-test-wait-for (text)
  "Wait until TEXT shows in the current buffer, in its text or an overlay's."
  (ob-chat-ai-test-wait (lambda () (string-search text (ob-chat-ai-test-shown)))))

(defun ob-chat-ai-test-helpers ()
  "Return the live chat-ai helper processes."
  (seq-filter (lambda (process)
                (and (process-live-p process)
                     (process-get process 'ob-chat-ai-setup)))
              (process-list)))

(defun ob-chat-ai-test-user-error (function)
  "Call FUNCTION and return the message of the `user-error' it signals."
  (let ((caught (should-error (funcall function) :type 'user-error)))
    (cadr caught)))

(defun ob-chat-ai-test-messages ()
  "Return the text of the *Messages* buffer."
  (with-current-buffer (messages-buffer) (buffer-string)))

;;;; Tests: the reply and the text sent

(ert-deftest ob-chat-ai-test-reply-lands-under-results ()
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :model gpt-4o-mini :system \"You are a helpful assistant.\" :temperature 0.2
Server-Sent Eventについて教えて
#+end_src
"
    (should (equal (ob-chat-ai-test-run) "Server-Sent Eventについて教えて"))
    (should (string-match-p "^#\\+RESULTS:\n: Server-Sent Eventについて教えて$"
                            (buffer-string)))
    (let ((body (ob-chat-ai-test-body)))
      (should (equal (alist-get 'model body) "gpt-4o-mini"))
      (should (equal (alist-get 'temperature body) 0.2))
      (should (eq (alist-get 'stream body) t))
      (should (equal (alist-get 'messages body)
                     [((role . "system") (content . "You are a helpful assistant."))
                      ((role . "user") (content . "Server-Sent Eventについて教えて"))])))))

(defconst ob-chat-ai-test-hard-text
  (concat "日本語と絵文字 🎉👍🏽\n"
          "\"double quotes\" and 'single' and \\backslashes\\ and \\n not a newline\n"
          "\ttab-indented\n"
          "\n\n"
          "control: \x01\x02\x1b[0m\x7f\n"
          "{\"looks\": [\"like\", \"JSON\"], \"n\": 1}\n"
          "* looks like a heading\n"
          "#+begin_example\n"
          "#+end_src inside\n"
          ":PROPERTIES:\n"
          "<<not-a-reference>>\n"
          "trailing spaces   ")
  "A prompt holding everything a hand-built JSON body gets wrong.")

(ert-deftest ob-chat-ai-test-any-text-reaches-the-server-exactly ()
  (dolist (stream '("yes" "no"))
    (ob-chat-ai-test-with-org
        (format "#+begin_src chat-ai :model m :stream %s\n%s\n#+end_src\n"
                stream
                (org-escape-code-in-string ob-chat-ai-test-hard-text))
      (let ((result (ob-chat-ai-test-run)))
        (should (equal (alist-get 'content (aref (alist-get 'messages (ob-chat-ai-test-body)) 0))
                       ob-chat-ai-test-hard-text))
        ;; A long result is an example block; reading it back adds a newline.
        (should (equal result (concat ob-chat-ai-test-hard-text "\n")))
        (should (string-search ",* looks like a heading\n,#+begin_example\n"
                               (buffer-string)))))))

(ert-deftest ob-chat-ai-test-several-choices-are-labelled ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :n 2\nhi\n#+end_src\n"
    (should (equal (ob-chat-ai-test-run) "hi\n\n[choice 2]\nhi #2"))))

;;;; Tests: header args

(ert-deftest ob-chat-ai-test-every-header-arg-has-its-json-type ()
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :model m :temperature 0.5 :top-p 1 :n 1 :stream no :stop '(\"###\" \"END\") :max-tokens 20 :max-completion-tokens 30 :presence-penalty -1 :frequency-penalty 0.5 :logit-bias {\"50256\": -100} :user 123 :seed 42 :response-format json_object :reasoning-effort low :store yes :metadata {\"project\": \"notes\"}
hi
#+end_src
"
    (ob-chat-ai-test-run)
    (let ((body (ob-chat-ai-test-body)))
      (should (equal (alist-get 'temperature body) 0.5))
      (should (equal (alist-get 'top_p body) 1))
      (should (equal (alist-get 'n body) 1))
      (should (eq (alist-get 'stream body) :false))
      (should (equal (alist-get 'stop body) ["###" "END"]))
      (should (equal (alist-get 'max_tokens body) 20))
      (should (equal (alist-get 'max_completion_tokens body) 30))
      (should (equal (alist-get 'presence_penalty body) -1))
      (should (equal (alist-get 'frequency_penalty body) 0.5))
      (should (equal (alist-get 'logit_bias body) `((,(intern "50256") . -100))))
      (should (equal (alist-get 'user body) "123"))
      (should (equal (alist-get 'seed body) 42))
      (should (equal (alist-get 'response_format body) '((type . "json_object"))))
      (should (equal (alist-get 'reasoning_effort body) "low"))
      (should (eq (alist-get 'store body) t))
      (should (equal (alist-get 'metadata body) '((project . "notes")))))))

(ert-deftest ob-chat-ai-test-stop-as-json-list-and-as-one-string ()
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :model m :stop [\"a b\", \"c\"]\nhi\n#+end_src\n"
    (ob-chat-ai-test-run)
    (should (equal (alist-get 'stop (ob-chat-ai-test-body)) ["a b" "c"])))
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :stop \"###\"\nhi\n#+end_src\n"
    (ob-chat-ai-test-run)
    (should (equal (alist-get 'stop (ob-chat-ai-test-body)) "###"))))

(ert-deftest ob-chat-ai-test-developer-role-for-the-system-prompt ()
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :model m :system \"Be brief.\" :role-system developer\nhi\n#+end_src\n"
    (ob-chat-ai-test-run)
    (should (equal (aref (alist-get 'messages (ob-chat-ai-test-body)) 0)
                   '((role . "developer") (content . "Be brief."))))))

(ert-deftest ob-chat-ai-test-params-literal-and-from-a-named-block ()
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :model m :temperature 0.1 :params {\"logprobs\": true, \"temperature\": 1.5}\nhi\n#+end_src\n"
    (ob-chat-ai-test-run)
    (let ((body (ob-chat-ai-test-body)))
      (should (eq (alist-get 'logprobs body) t))
      (should (equal (alist-get 'temperature body) 0.1))))
  (ob-chat-ai-test-with-org
      "#+name: extra
#+begin_src json
{\"top_logprobs\": 2, \"parallel_tool_calls\": false}
#+end_src

#+begin_src chat-ai :model m :params extra
hi
#+end_src
"
    (ob-chat-ai-test-run)
    (let ((body (ob-chat-ai-test-body)))
      (should (equal (alist-get 'top_logprobs body) 2))
      (should (eq (alist-get 'parallel_tool_calls body) :false)))))

(ert-deftest ob-chat-ai-test-defaults-and-properties ()
  (let ((org-babel-default-header-args:chat-ai
         '((:model . "default-model") (:temperature . 0.3))))
    (ob-chat-ai-test-with-org "#+begin_src chat-ai\nhi\n#+end_src\n"
      (ob-chat-ai-test-run)
      (let ((body (ob-chat-ai-test-body)))
        (should (equal (alist-get 'model body) "default-model"))
        (should (equal (alist-get 'temperature body) 0.3))))
    (ob-chat-ai-test-with-org
        "#+PROPERTY: header-args:chat-ai :model property-model :seed 7

* A heading
:PROPERTIES:
:header-args:chat-ai+: :temperature 0.9
:END:
#+begin_src chat-ai
hi
#+end_src
"
      (org-set-regexps-and-options)
      (ob-chat-ai-test-run)
      (let ((body (ob-chat-ai-test-body)))
        (should (equal (alist-get 'model body) "property-model"))
        (should (equal (alist-get 'seed body) 7))
        (should (equal (alist-get 'temperature body) 0.9))))))

(ert-deftest ob-chat-ai-test-bad-values-are-refused-before-sending ()
  (dolist (case '((":temperature hot"
                   "chat-ai: :temperature must be a number from 0 to 2, not \"hot\"")
                  (":n 0" "chat-ai: :n must be a whole number from 1 to 128, not 0")
                  (":reasoning-effort extreme"
                   "chat-ai: :reasoning-effort must be one of none, minimal, low, medium, high, xhigh, max, not \"extreme\"")
                  (":stream maybe"
                   "chat-ai: :stream must be yes or no, not maybe")
                  (":logit-bias {oops" "chat-ai: :logit-bias is not valid JSON")
                  (":role-system boss" "chat-ai: :role-system must be system or developer")
                  (":timeout soon"
                   "chat-ai: :timeout must be a number of seconds above 0 and at most 86400")))
    (ob-chat-ai-test-with-org
        (format "before\n#+begin_src chat-ai :model m %s\nhi\n#+end_src\nafter\n"
                (car case))
      (let ((original (buffer-string))
            (message (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)))
        (should (string-prefix-p (cadr case) message))
        (should (equal (buffer-string) original))
        (should (null (ob-chat-ai-test-received)))))))

(ert-deftest ob-chat-ai-test-misspelt-header-arg-is-reported ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :temprature 0.2\nhi\n#+end_src\n"
    (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                   "chat-ai: Unknown header argument :temprature (did you mean :temperature?)"))
    (should (null (ob-chat-ai-test-received)))))

(ert-deftest ob-chat-ai-test-empty-block-is-refused ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\n  \n#+end_src\n"
    (should (string-prefix-p "chat-ai: The block is empty"
                             (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)))))

(ert-deftest ob-chat-ai-test-base-url-from-header-then-environment ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
    (setenv "OPENAI_BASE_URL" base-url)
    (should (equal (ob-chat-ai-test-run) "hi")))
  (ob-chat-ai-test-with-org
      (format "#+begin_src chat-ai :model m :base-url %s\nhi\n#+end_src\n"
              ob-chat-ai-test-base-url)
    (setenv "OPENAI_BASE_URL" "http://127.0.0.1:9/unused")
    (should (equal (ob-chat-ai-test-run) "hi"))))

;;;; Tests: providers

(ert-deftest ob-chat-ai-test-provider-sets-the-address-and-default-model ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :provider local\nhi\n#+end_src\n"
    (setenv "OPENAI_BASE_URL" "http://127.0.0.1:9/unused")
    (setenv "CHAT_AI_LOCAL_URL" base-url)
    (should (equal (ob-chat-ai-test-run) "hi"))
    (should (equal (alist-get 'model (ob-chat-ai-test-body)) "smollm2")))
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :provider local :model other\nhi\n#+end_src\n"
    (setenv "CHAT_AI_LOCAL_URL" base-url)
    (should (equal (ob-chat-ai-test-run) "hi"))
    (should (equal (alist-get 'model (ob-chat-ai-test-body)) "other")))
  (let ((file (make-temp-file "providers" nil ".json")))
    (unwind-protect
        (ob-chat-ai-test-with-org "#+begin_src chat-ai\nhi\n#+end_src\n"
          (with-temp-file file
            (insert (json-serialize `((mine (base_url . ,base-url))))))
          (setenv "OPENAI_BASE_URL" "http://127.0.0.1:9/unused")
          (setenv "CHAT_AI_PROVIDERS_FILE" file)
          (let ((ob-chat-ai-provider "mine"))
            (should (equal (ob-chat-ai-test-run) "hi"))
            (should (equal (alist-get 'model (ob-chat-ai-test-body)) "gpt-4o-mini"))))
      (delete-file file))))

(ert-deftest ob-chat-ai-test-local-model-not-running-says-how-to-start-it ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :provider local :max-retries 0\nhi\n#+end_src\n"
    (setenv "CHAT_AI_LOCAL_URL" "http://127.0.0.1:9/v1")
    (should (equal (ob-chat-ai-test-run)
                   "chat-ai error: connection to 127.0.0.1:9 refused; \
start the local model with: chat-ai-local start"))))

(ert-deftest ob-chat-ai-test-unknown-provider-is-refused ()
  (ob-chat-ai-test-with-org "before\n#+begin_src chat-ai :provider nope\nhi\n#+end_src\n"
    (let ((original (buffer-string)))
      (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                     "chat-ai: unknown provider \"nope\"; known: openai, azure, local"))
      (should (equal (buffer-string) original))
      (should-not (ob-chat-ai-test-received)))))

;;;; Tests: conversations

(defun ob-chat-ai-test-messages-sent (&optional request)
  "Return the messages of REQUEST, or of the only request, as (ROLE CONTENT)."
  (mapcar (lambda (message)
            (list (alist-get 'role message) (alist-get 'content message)))
          (alist-get 'messages (ob-chat-ai-test-body request))))

(defun ob-chat-ai-test-run-last ()
  "Execute the last source block of the buffer."
  (goto-char (point-max))
  (re-search-backward "^#\\+begin_src")
  (org-babel-execute-src-block))

(ert-deftest ob-chat-ai-test-turns-in-one-block ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m
[system]: Answer in one word.
[user]: Capital of France?
[assistant]: Paris.

[user]: And of Japan?
\\[user]: stays text
#+end_src
"
    (should (equal (ob-chat-ai-test-run) "And of Japan?\n[user]: stays text"))
    (should (equal (ob-chat-ai-test-messages-sent)
                   '(("system" "Answer in one word.")
                     ("user" "Capital of France?")
                     ("assistant" "Paris.")
                     ("user" "And of Japan?\n[user]: stays text"))))))

(ert-deftest ob-chat-ai-test-org-ai-markers-work-unchanged ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m
[SYS]: Be brief.
[ME]: Hello
[AI]: Hi!
[ME]: How are you?
[AI]:
#+end_src
"
    (should (equal (ob-chat-ai-test-run) "How are you?"))
    (should (equal (ob-chat-ai-test-messages-sent)
                   '(("system" "Be brief.") ("user" "Hello") ("assistant" "Hi!")
                     ("user" "How are you?"))))))

(ert-deftest ob-chat-ai-test-session-threads-blocks-in-document-order ()
  (ob-chat-ai-test-with-org "* Chat
#+begin_src chat-ai :model m :session trip :system \"You plan trips.\"
Where should I go in May?
#+end_src

#+RESULTS:
: Kyoto.

#+begin_src chat-ai :model m :session other
Unrelated.
#+end_src

#+RESULTS:
: Not part of it.

#+begin_src chat-ai :model m :session trip
How do I get there?
#+end_src
"
    (ob-chat-ai-test-run-last)
    (should (equal (ob-chat-ai-test-messages-sent)
                   '(("system" "You plan trips.")
                     ("user" "Where should I go in May?")
                     ("assistant" "Kyoto.")
                     ("user" "How do I get there?"))))
    (goto-char (point-min))
    (search-forward ": Kyoto.")
    (replace-match ": Osaka, after all.")
    (with-current-buffer (process-buffer ob-chat-ai-test-server) (erase-buffer))
    (ob-chat-ai-test-run-last)
    (should (equal (nth 2 (ob-chat-ai-test-messages-sent))
                   '("assistant" "Osaka, after all.")))))

(ert-deftest ob-chat-ai-test-session-index-follows-edits-above ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :session s
First.
#+end_src

#+RESULTS:
: One.

#+begin_src chat-ai :model m :session s
Last.
#+end_src
"
    (ob-chat-ai-test-run-last)
    (should (equal (ob-chat-ai-test-messages-sent)
                   '(("user" "First.") ("assistant" "One.") ("user" "Last."))))
    (goto-char (point-min))
    (search-forward ": One.\n")
    (insert "\n#+begin_src chat-ai :model m :session s\nSecond.\n#+end_src\n\n"
            "#+RESULTS:\n: Two.\n")
    (with-current-buffer (process-buffer ob-chat-ai-test-server) (erase-buffer))
    (ob-chat-ai-test-run-last)
    (should (equal (ob-chat-ai-test-messages-sent)
                   '(("user" "First.") ("assistant" "One.")
                     ("user" "Second.") ("assistant" "Two.") ("user" "Last."))))
    (goto-char (point-min))
    (search-forward ":session s")
    (replace-match ":session other")
    (with-current-buffer (process-buffer ob-chat-ai-test-server) (erase-buffer))
    (ob-chat-ai-test-run-last)
    (should (equal (ob-chat-ai-test-messages-sent)
                   '(("user" "Second.") ("assistant" "Two.") ("user" "Last."))))))

(ert-deftest ob-chat-ai-test-session-from-a-heading-property ()
  (ob-chat-ai-test-with-org "* Thread
:PROPERTIES:
:header-args:chat-ai: :session t1 :model m
:END:
#+begin_src chat-ai
First question
#+end_src

#+RESULTS:
#+begin_example
A long
answer
#+end_example

#+begin_src chat-ai
Second question
#+end_src
"
    (ob-chat-ai-test-run-last)
    (should (equal (ob-chat-ai-test-messages-sent)
                   '(("user" "First question")
                     ("assistant" "A long\nanswer")
                     ("user" "Second question"))))))

(ert-deftest ob-chat-ai-test-vars-and-noweb-in-the-body ()
  (ob-chat-ai-test-with-org "#+name: langs
| name | year |
|------+------|
| Lisp | 1958 |

#+name: topic
#+begin_src text
Org Babel
#+end_src

#+begin_src chat-ai :model m :var who=\"a poet\" n=3 data=langs :noweb yes
As ${who}, say $n things about <<topic>>:
$data
$unknown stays.
#+end_src
"
    (re-search-forward "^#\\+begin_src chat-ai")
    (org-babel-execute-src-block)
    (should (equal (cadr (car (ob-chat-ai-test-messages-sent)))
                   "As a poet, say 3 things about Org Babel:
| name | year |
|------+------|
| Lisp | 1958 |
$unknown stays."))))

(ert-deftest ob-chat-ai-test-dry-run-and-expand-show-the-request-and-send-nothing ()
  (ob-chat-ai-test-with-org
      (format "#+begin_src chat-ai :model m :api-key %s :dry-run yes :system \"S\"
Hello \"there\"
#+end_src
" ob-chat-ai-test-key)
    (let* ((result (ob-chat-ai-test-run))
           (request (json-parse-string result :object-type 'alist)))
      (should (equal (alist-get 'url request) (concat base-url "/chat/completions")))
      (should (equal (alist-get 'Authorization (alist-get 'headers request)) "Bearer ***"))
      (should (equal (alist-get 'content (aref (alist-get 'messages (alist-get 'body request)) 1))
                     "Hello \"there\""))
      (should-not (string-search ob-chat-ai-test-key
                                 (buffer-substring (org-babel-where-is-src-block-result)
                                                   (point-max))))
      (goto-char (point-min))
      (should (equal (org-babel-expand-src-block) "Hello \"there\""))
      (should-not (ob-chat-ai-test-received)))))

(ert-deftest ob-chat-ai-test-usage-line-after-the-reply ()
  (dolist (stream '("yes" "no"))
    (ob-chat-ai-test-with-org
        (format "#+begin_src chat-ai :model m :usage yes :stream %s\nabcd\n#+end_src\n" stream)
      (should (equal (ob-chat-ai-test-run)
                     "abcd\n\n[chat-ai: m, tokens 4 prompt + 4 completion = 8, price unknown, finish_reason stop]"))
      (should (equal (equal stream "yes")
                     (equal (alist-get 'stream_options (ob-chat-ai-test-body))
                            '((include_usage . t))))))))

(ert-deftest ob-chat-ai-test-cache-does-not-send-an-unchanged-block-again ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :cache yes\nonce\n#+end_src\n"
    (should (equal (ob-chat-ai-test-run) "once"))
    (should (equal (ob-chat-ai-test-run) "once"))
    (should (= 1 (length (ob-chat-ai-test-received 1))))))

(ert-deftest ob-chat-ai-test-json-replies-are-pretty-and-usable-as-data ()
  (ob-chat-ai-test-with-org "#+name: city-schema
#+begin_src json
{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}
#+end_src

#+name: answer
#+begin_src chat-ai :model m :response-format city-schema
{\"city\": \"京都\", \"sights\": [\"Kinkaku-ji\", \"Gion\"]}
#+end_src

#+begin_src emacs-lisp :var reply=answer
(gethash \"city\" (json-parse-string reply))
#+end_src
"
    (re-search-forward "^#\\+begin_src chat-ai")
    (org-babel-execute-src-block)
    (should (equal (alist-get 'response_format (ob-chat-ai-test-body))
                   '((type . "json_schema")
                     (json_schema (name . "reply")
                                  (schema (type . "object")
                                          (properties (city (type . "string"))))))))
    (should (string-search "#+RESULTS: answer
: {
:   \"city\": \"京都\",
:   \"sights\": [
:     \"Kinkaku-ji\",
:     \"Gion\"
:   ]
: }
" (buffer-string)))
    (re-search-forward "^#\\+begin_src emacs-lisp")
    (should (equal (org-babel-execute-src-block) "京都"))))

(defconst ob-chat-ai-test-markdown
  "# Plan
Run **this**:
```shell
* not a heading
#+end_src
```"
  "A Markdown reply that breaks Org if left alone.")

(defun ob-chat-ai-test-escaped (text)
  "Return TEXT as the body of a source block holds it, Org syntax escaped."
  (org-escape-code-in-string text))

(defconst ob-chat-ai-test-markdown-as-org
  ":results:
,** Plan
Run *this*:
#+begin_src sh :eval never
,* not a heading
,#+end_src
#+end_src
:end:
"
  "`ob-chat-ai-test-markdown' as the results of a block under a first-level heading.")

(ert-deftest ob-chat-ai-test-format-org-converts-the-reply ()
  (ob-chat-ai-test-with-org
      (format "* Notes\n#+begin_src chat-ai :model m :format org :results drawer :stream no\n%s\n#+end_src\n"
              (ob-chat-ai-test-escaped ob-chat-ai-test-markdown))
    (re-search-forward "^#\\+begin_src")
    (org-babel-execute-src-block)
    (should (string-suffix-p (concat "#+RESULTS:\n" ob-chat-ai-test-markdown-as-org)
                             (buffer-string)))))

(ert-deftest ob-chat-ai-test-format-org-converts-as-it-streams ()
  (ob-chat-ai-test-async
      (format "* Notes\n#+begin_src chat-ai :model held :format org :results drawer\n%s\n#+end_src\n"
              (ob-chat-ai-test-escaped ob-chat-ai-test-markdown))
    (ob-chat-ai-test-execute "^#\\+begin_src")
    (ob-chat-ai-test-wait-for ": ** Plan")
    (should-not (string-search "#+RESULTS" (buffer-string)))
    (ob-chat-ai-test-release)
    (should (string-suffix-p (concat "#+RESULTS:\n" ob-chat-ai-test-markdown-as-org)
                             (ob-chat-ai-test-idle)))))

(ert-deftest ob-chat-ai-test-format-must-be-markdown-or-org ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :format html\nhi\n#+end_src\n"
    (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                   "chat-ai: :format must be markdown or org, not html"))))

;;;; Tests: proxies and Azure

(ert-deftest ob-chat-ai-test-proxy-with-its-own-header-as-in-the-seed ()
  (ob-chat-ai-test-with-org
      (format "#+begin_src chat-ai :base-url %s :headers \"openai-event-code: hackathon/githubuser\" :max-tokens 256 :temperature 1 :system \"You are an AI assistant that writes poems in the style of William Shakespeare.\"
Write a poem about indian elephants
#+end_src
" (replace-regexp-in-string "/v1\\'" "/api/v1" ob-chat-ai-test-base-url))
    (should (equal (ob-chat-ai-test-run) "Write a poem about indian elephants"))
    (let* ((request (car (ob-chat-ai-test-received 1)))
           (headers (alist-get 'headers request)))
      (should (equal (alist-get 'path request) "/api/v1/chat/completions"))
      (should (equal (alist-get 'openai-event-code headers) "hackathon/githubuser"))
      (should-not (alist-get 'Authorization headers))
      (should (equal (alist-get 'max_tokens (alist-get 'body request)) 256))))
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :model m :headers '(\"X-One: 1\" \"X-Two: two words\")\nhi\n#+end_src\n"
    (should (equal (ob-chat-ai-test-run) "hi"))
    (let ((headers (alist-get 'headers (car (ob-chat-ai-test-received 1)))))
      (should (equal (alist-get 'X-One headers) "1"))
      (should (equal (alist-get 'X-Two headers) "two words")))))

(ert-deftest ob-chat-ai-test-azure-deployment-version-and-key-header ()
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :provider azure :model deployment-name :api-version 2023-09-01-preview
Where was it played?
#+end_src
"
    (setenv "AZURE_OPENAI_ENDPOINT" base-url)
    (setenv "AZURE_OPENAI_API_KEY" ob-chat-ai-test-key)
    (should (equal (ob-chat-ai-test-run) "Where was it played?"))
    (let* ((request (car (ob-chat-ai-test-received 1)))
           (headers (alist-get 'headers request)))
      (should (equal (alist-get 'path request)
                     "/v1/openai/deployments/deployment-name/chat/completions"))
      (should (equal (alist-get 'query request) "api-version=2023-09-01-preview"))
      (should (equal (alist-get 'api-key headers) ob-chat-ai-test-key))
      (should-not (alist-get 'Authorization headers))
      (should-not (string-search ob-chat-ai-test-key (buffer-string))))))

(ert-deftest ob-chat-ai-test-bad-headers-and-missing-endpoint-are-refused ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :headers \"no colon\"\nhi\n#+end_src\n"
    (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                   "chat-ai: :headers takes \"Name: value\", not \"no colon\""))
    (should-not (ob-chat-ai-test-received)))
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :provider azure :model d\nhi\n#+end_src\n"
    (setenv "AZURE_OPENAI_ENDPOINT" nil)
    (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                   "chat-ai: azure needs an endpoint: set AZURE_OPENAI_ENDPOINT \
or base_url"))))

;;;; Tests: the API key

(defun ob-chat-ai-test-authorization ()
  "Return the Authorization header of the only request received."
  (alist-get 'Authorization (alist-get 'headers (car (ob-chat-ai-test-received 1)))))

(ert-deftest ob-chat-ai-test-key-from-a-noweb-reference-to-a-named-block ()
  (ob-chat-ai-test-with-org
      (format "#+name: OPENAI_API_KEY
#+begin_src text
%s
#+end_src

#+begin_src chat-ai :model m :api-key <<OPENAI_API_KEY>>
hi
#+end_src
" ob-chat-ai-test-key)
    (setenv "OPENAI_API_KEY" "sk-from-the-environment")
    (should (equal (ob-chat-ai-test-run) "hi"))
    (should (equal (ob-chat-ai-test-authorization)
                   (concat "Bearer " ob-chat-ai-test-key)))))

(ert-deftest ob-chat-ai-test-key-stays-out-of-exports-even-when-the-server-echoes-it ()
  (ob-chat-ai-test-with-org
      (format "#+name: OPENAI_API_KEY
#+begin_src text :exports none
%s
#+end_src

#+begin_src chat-ai :model error-401 :api-key <<OPENAI_API_KEY>> :exports both
hi
#+end_src
" ob-chat-ai-test-key)
    (require 'ox-ascii)
    (let ((exported (org-export-as 'ascii)))
      (should (string-search "Scenario error 401; you sent Bearer ***." exported))
      (should-not (string-search ob-chat-ai-test-key exported))
      (should-not (string-search "0123456789abcdef" exported)))
    (should-not (string-search ob-chat-ai-test-key (ob-chat-ai-test-messages)))))

(ert-deftest ob-chat-ai-test-key-literal-then-auth-source-then-environment ()
  (let ((authinfo (make-temp-file "authinfo")))
    (unwind-protect
        (progn
          (with-temp-file authinfo
            (insert "machine 127.0.0.1 login apikey password sk-from-auth-source\n"))
          (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :api-key sk-literal\nhi\n#+end_src\n"
            (setq-local auth-sources (list authinfo))
            (setenv "OPENAI_API_KEY" "sk-from-the-environment")
            (ob-chat-ai-test-run)
            (should (equal (ob-chat-ai-test-authorization) "Bearer sk-literal")))
          (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
            (let ((auth-sources (list authinfo)))
              (setenv "OPENAI_API_KEY" "sk-from-the-environment")
              (ob-chat-ai-test-run)
              (should (equal (ob-chat-ai-test-authorization)
                             "Bearer sk-from-auth-source")))))
      (delete-file authinfo)))
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
    (setenv "OPENAI_API_KEY" "sk-from-the-environment")
    (ob-chat-ai-test-run)
    (should (equal (ob-chat-ai-test-authorization) "Bearer sk-from-the-environment")))
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
    (ob-chat-ai-test-run)
    (should (null (ob-chat-ai-test-authorization)))))

(ert-deftest ob-chat-ai-test-no-key-says-where-it-looked ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
    (setenv "OPENAI_BASE_URL" nil)
    (let ((auth-sources '("~/.authinfo.gpg")))
      (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                     "chat-ai: no API key for api.openai.com; looked in :api-key, \
auth-source (machine api.openai.com in ~/.authinfo.gpg) and $OPENAI_API_KEY")))))

(ert-deftest ob-chat-ai-test-missing-key-block-is-named ()
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :model m :api-key <<MY_KEY>>\nhi\n#+end_src\n"
    (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                   "chat-ai: :api-key refers to MY_KEY, but no block has #+name: MY_KEY"))))

(ert-deftest ob-chat-ai-test-key-is-not-on-any-command-line ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
    (let* ((envelope `((base_url . ,base-url) (api_key . ,ob-chat-ai-test-key)
                       (body (model . "slow")
                             (stream . t)
                             (messages . [((role . "user") (content . "abcdefghi"))]))))
           (request (ob-chat-ai-process-send envelope)))
      (dolist (process (process-list))
        (should-not (string-search ob-chat-ai-test-key
                                   (format "%S" (process-command process)))))
      (should (equal (alist-get 'type (ob-chat-ai-process-wait request)) "done")))))

;;;; Tests: failures

(ert-deftest ob-chat-ai-test-api-error-is-one-line-without-the-key ()
  (ob-chat-ai-test-with-org
      (format "Text before.

#+begin_src chat-ai :model error-401-invalid_api_key :api-key %s
hi
#+end_src

#+RESULTS:
: an earlier answer

Text after.
" ob-chat-ai-test-key)
    (let ((result (ob-chat-ai-test-run)))
      (should (equal result "chat-ai error: HTTP 401 scenario_error invalid_api_key: \
Scenario error 401; you sent Bearer ***. (check the API key)"))
      (should (string-prefix-p "Text before.\n" (buffer-string)))
      (should (string-suffix-p "\nText after.\n" (buffer-string)))
      (should-not (string-search ob-chat-ai-test-key
                                 (buffer-substring (org-babel-where-is-src-block-result)
                                                   (point-max))))
      (should-not (string-search ob-chat-ai-test-key (ob-chat-ai-test-messages))))))

(ert-deftest ob-chat-ai-test-server-errors-are-retried-and-the-user-told ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model flaky-1-503\nhi\n#+end_src\n"
    (should (equal (ob-chat-ai-test-run) "hi"))
    (should (= 2 (length (ob-chat-ai-test-received 2))))
    (should (string-search "chat-ai: HTTP 503 scenario_error: Scenario error 503; \
you sent no key. (the server failed; try again later); retrying in 0.0 s (1 of 2)"
                           (ob-chat-ai-test-messages))))
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :model flaky-1-502 :max-retries 0\nhi\n#+end_src\n"
    (should (string-prefix-p "chat-ai error: HTTP 502" (ob-chat-ai-test-run))))
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :max-retries lots\nhi\n#+end_src\n"
    (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                   "chat-ai: :max-retries must be a whole number from 0 to 10, \
not \"lots\""))))

(ert-deftest ob-chat-ai-test-cut-stream-keeps-the-text ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model cut\nabcdefghijkl\n#+end_src\n"
    (should (equal (ob-chat-ai-test-run)
                   "abcdef\n\nchat-ai error: the connection closed mid-stream; \
the reply is incomplete"))))

(ert-deftest ob-chat-ai-test-html-instead-of-json ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model html :stream no\nhi\n#+end_src\n"
    (should (equal (ob-chat-ai-test-run)
                   "chat-ai error: HTTP 200: the server answered with text/html, \
not JSON: 502 Bad Gateway"))))

(ert-deftest ob-chat-ai-test-connection-refused ()
  (ob-chat-ai-test-with-org
      "#+begin_src chat-ai :model m :base-url http://127.0.0.1:9/v1\nhi\n#+end_src\n"
    (should (equal (ob-chat-ai-test-run)
                   "chat-ai error: connection to 127.0.0.1:9 refused; \
is the server running?"))))

(ert-deftest ob-chat-ai-test-helper-that-cannot-start ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
    (let ((ob-chat-ai-helper-command '("/nonexistent/chat-ai" "--serve")))
      (let ((caught (should-error (ob-chat-ai-test-run) :type 'ob-chat-ai-error)))
        (should (string-match-p "cannot run /nonexistent/chat-ai"
                                (error-message-string caught)))))))

(ert-deftest ob-chat-ai-test-helper-that-crashes ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
    (let ((ob-chat-ai-helper-command
           (list ob-chat-ai-test-python "-c"
                 "import sys; sys.stdin.readline(); sys.stderr.write('Traceback\\nboom\\n'); sys.exit(3)")))
      (should (equal (ob-chat-ai-test-run)
                     "chat-ai error: the helper exited with status 3 before answering: boom"))
      (should-not ob-chat-ai--helper)
      (ob-chat-ai-test-wait (lambda () (null (ob-chat-ai-test-helpers)))))))


;;;; Tests: asynchronous replies

(defmacro ob-chat-ai-test-async (text &rest body)
  "Run BODY like `ob-chat-ai-test-with-org' on TEXT, blocks answering asynchronously."
  (declare (indent 1) (debug t))
  `(let ((ob-chat-ai-async 'always)
         (process-environment (cons "CHAT_AI_TEST_DELAY=0.2" process-environment)))
     (ob-chat-ai-test-with-org ,text
       (unwind-protect (progn ,@body)
         (ob-chat-ai-cancel-all)))))

(defun ob-chat-ai-test-idle ()
  "Wait until no chat-ai request is left, then return the buffer text."
  (ob-chat-ai-test-wait (lambda () (and (null ob-chat-ai--jobs)
                                        (null (ob-chat-ai-process-open-requests)))))
  (buffer-string))

(defun ob-chat-ai-test-execute (search)
  "Execute the block whose first line matches SEARCH."
  (goto-char (point-min))
  (re-search-forward search)
  (org-babel-execute-src-block))

(ert-deftest ob-chat-ai-test-async-returns-a-placeholder-then-the-reply ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model slow\nabcdefghijkl\n#+end_src\n"
    (ob-chat-ai-test-execute "chat-ai")
    (should (equal (buffer-string) "#+begin_src chat-ai :model slow\nabcdefghijkl\n#+end_src\n"))
    (should (string-match-p "#\\+end_src\n: chat-ai: waiting for slow\\.\\.\\.  \\[[0-9]+s, 0 chars\\]\n\\'"
                            (ob-chat-ai-test-shown)))
    (should (= 1 (length ob-chat-ai--jobs)))
    (should (string-suffix-p "#+RESULTS:\n: abcdefghijkl\n" (ob-chat-ai-test-idle)))))

;; A pure function: the job is made here, with no helper or server.
(ert-deftest ob-chat-ai-test-preview-lines ()
  (cl-flet ((preview (shown &rest fields)
              (let ((text (ob-chat-ai--preview
                           (apply #'ob-chat-ai--job-create
                                  :shown shown :started (float-time)
                                  :placeholder "chat-ai: waiting for m..."
                                  :chars (or (plist-get fields :chars)
                                             (apply #'+ (mapcar #'length shown)))
                                  fields))))
                (should (eq (get-text-property 1 'face text) 'org-code))
                (should (eq (get-text-property (1- (length text)) 'face text) 'shadow))
                (substring-no-properties text 0 (string-search "  [" text)))))
    (should (equal (preview '("def\ngh" "abc\n")) "\n: abc\n: def\n: gh"))
    (should (equal (preview '("one\n")) "\n: one\n: "))
    ;; More has come than shows: other choices (:n), a line not yet
    ;; converted (:format org).  Nothing was cut.
    (should (equal (preview '("one\n") :chars 40) "\n: one\n: "))
    (should (equal (preview nil) "\n: chat-ai: waiting for m..."))
    (should (equal (preview nil :thought 1234 :chars 0) "\n: chat-ai: thinking… 1,234 chars"))
    (should (equal (preview (list (make-string 450 ?x)))
                   (concat "\n: " (make-string 200 ?x) "\n: " (make-string 200 ?x)
                           "\n: " (make-string 50 ?x))))
    (let ((text (preview (list (concat (make-string 3990 ?b) "\nlast")
                               (make-string 3000 ?a)))))
      (should (string-prefix-p "\n: …\n: aaaaab" text))
      (should (string-suffix-p "\n: last" text))
      (should (= (length (replace-regexp-in-string "\n: \\|…" "" text)) 3999)))))

(ert-deftest ob-chat-ai-test-async-many-replies-stream-at-once ()
  (ob-chat-ai-test-async
      (mapconcat (lambda (i)
                   (format "* Q%d\n#+begin_src chat-ai :model slow\nreply %d abcdefghijklmnopqr\n#+end_src\n"
                           i i))
                 (number-sequence 1 20) "\n")
    (org-babel-execute-buffer)
    ;; Text shows under the blocks while they stream, in overlays only.
    (ob-chat-ai-test-wait
     (lambda ()
       (seq-some (lambda (overlay)
                   (string-match-p "\n: reply [0-9]+ abc" (or (overlay-get overlay 'after-string) "")))
                 (overlays-in (point-min) (point-max)))))
    (let ((text (ob-chat-ai-test-idle)))
      (dolist (i (number-sequence 1 20))
        (should (string-search (format "#+end_src\n\n#+RESULTS:\n: reply %d abcdefghijklmnopqr\n" i)
                               text))))))

(ert-deftest ob-chat-ai-test-async-text-grows-in-place ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model held\nabc\ndef\nghi\njkl\n#+end_src\n\nAfter.\n"
    (ob-chat-ai-test-execute "chat-ai")
    (ob-chat-ai-test-wait-for "\n: abc")
    (should-not (string-search "waiting for" (ob-chat-ai-test-shown)))
    (ob-chat-ai-test-wait-for "\n: def")
    (should-not (string-search ": ghi" (ob-chat-ai-test-shown)))
    (should (string-suffix-p "\n\nAfter.\n" (ob-chat-ai-test-shown)))
    (goto-char (point-min))
    (should-not (string-search "abc" (buffer-substring (search-forward "#+end_src")
                                                       (point-max))))
    (ob-chat-ai-test-release)
    (should (string-suffix-p "#+RESULTS:\n: abc\n: def\n: ghi\n: jkl\n\nAfter.\n"
                             (ob-chat-ai-test-idle)))))

(ert-deftest ob-chat-ai-test-async-goes-through-babel-result-handling ()
  (dolist (case '((":results raw" "#+RESULTS:\nabc\ndef\n")
                  (":results drawer" "#+RESULTS:\n:results:\nabc\ndef\n:end:\n")
                  (":wrap example" "#+RESULTS:\n#+begin_example\nabc\ndef\n#+end_example\n")
                  (":results verbatim" "#+RESULTS:\n: abc\n: def\n")))
    (ob-chat-ai-test-async
        (format "#+begin_src chat-ai :model slow %s\nabc\ndef\n#+end_src\n" (car case))
      (ob-chat-ai-test-execute "chat-ai")
      (should (string-suffix-p (cadr case) (ob-chat-ai-test-idle))))))

(ert-deftest ob-chat-ai-test-async-append-keeps-the-earlier-result ()
  (ob-chat-ai-test-async
      "#+begin_src chat-ai :model slow :results append\nnew\n#+end_src\n\n#+RESULTS:\n: old\n"
    (ob-chat-ai-test-execute "chat-ai")
    (should (string-suffix-p "#+RESULTS:\n: old\n: new\n" (ob-chat-ai-test-idle)))))

(ert-deftest ob-chat-ai-test-async-error-replaces-the-placeholder ()
  (ob-chat-ai-test-async
      "#+begin_src chat-ai :model error-500\nhi\n#+end_src\n"
    (ob-chat-ai-test-execute "chat-ai")
    (should (string-suffix-p
             "#+RESULTS:\n: chat-ai error: HTTP 500 scenario_error: Scenario error 500; \
you sent no key. (the server failed; try again later)\n"
             (ob-chat-ai-test-idle)))))

(ert-deftest ob-chat-ai-test-async-empty-reply-and-crash-are-resolved ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model empty\nhi\n#+end_src\n"
    (ob-chat-ai-test-execute "chat-ai")
    (should (string-suffix-p "#+RESULTS:\n: [chat-ai: the model sent an empty reply]\n"
                             (ob-chat-ai-test-idle))))
  (ob-chat-ai-test-async "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
    (let ((ob-chat-ai-helper-command
           (list ob-chat-ai-test-python "-c" "import sys; sys.exit(4)")))
      (ob-chat-ai-test-execute "chat-ai"))
    (should (string-suffix-p
             "#+RESULTS:\n: chat-ai error: the helper exited with status 4 before answering\n"
             (ob-chat-ai-test-idle)))))

(ert-deftest ob-chat-ai-test-async-cancel-keeps-the-text-marked-incomplete ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model held\nabcdefghijklmnopqrstuvwxyz\n#+end_src\n"
    (ob-chat-ai-test-execute "chat-ai")
    (ob-chat-ai-test-wait-for ": abcdef")
    (goto-char (point-min))
    (ob-chat-ai-cancel)
    (let ((text (ob-chat-ai-test-idle)))
      (should (string-match-p
               "#\\+RESULTS:\n: abcdef.*\n: \n: \\[chat-ai: cancelled; the reply is incomplete\\]\n\\'"
               text))
      (should-not (string-search "xyz" (substring text (string-search "#+RESULTS:" text)))))
    (should-not (ob-chat-ai-process-open-requests))
    (should-error (ob-chat-ai-cancel) :type 'user-error)))

(ert-deftest ob-chat-ai-test-async-two-blocks-at-once ()
  (ob-chat-ai-test-async "* One
#+begin_src chat-ai :model slow
first reply
#+end_src

* Two
#+begin_src chat-ai :model slow
second reply
#+end_src
"
    (ob-chat-ai-test-execute "chat-ai")
    (ob-chat-ai-test-execute "^\\* Two\n#\\+begin_src")
    (should (= 2 (length ob-chat-ai--jobs)))
    (should (equal (ob-chat-ai-test-helpers) (list ob-chat-ai--helper)))
    (should (equal (ob-chat-ai-test-idle)
                   "* One
#+begin_src chat-ai :model slow
first reply
#+end_src

#+RESULTS:
: first reply

* Two
#+begin_src chat-ai :model slow
second reply
#+end_src

#+RESULTS:
: second reply
"))))

(ert-deftest ob-chat-ai-test-async-execute-buffer-runs-blocks-at-once ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model held
one
#+end_src

#+begin_src chat-ai :model held
two
#+end_src
"
    (org-babel-execute-buffer)
    (should (= 2 (length ob-chat-ai--jobs)))
    (should (= 2 (length (ob-chat-ai-process-open-requests))))
    (ob-chat-ai-test-release)
    (should (equal (ob-chat-ai-test-idle)
                   "#+begin_src chat-ai :model held
one
#+end_src

#+RESULTS:
: one

#+begin_src chat-ai :model held
two
#+end_src

#+RESULTS:
: two
"))))

(ert-deftest ob-chat-ai-test-async-edits-during-the-stream-stay ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model held\nabcdefghijklmnopqr\n#+end_src\n"
    (ob-chat-ai-test-execute "chat-ai")
    (ob-chat-ai-test-wait-for ": abc")
    (goto-char (point-min))
    (insert "A line typed above.\n")
    (goto-char (point-max))
    (insert "\nA line typed below.\n")
    (should ob-chat-ai--jobs)
    (ob-chat-ai-test-release)
    (should (equal (ob-chat-ai-test-idle)
                   "A line typed above.
#+begin_src chat-ai :model held
abcdefghijklmnopqr
#+end_src

#+RESULTS:
: abcdefghijklmnopqr

A line typed below.
"))))

(ert-deftest ob-chat-ai-test-async-deleted-block-drops-the-request ()
  (ob-chat-ai-test-async "Before.\n#+begin_src chat-ai :model held\nabcdefghijklmnopqrstuvwxyz\n#+end_src\nAfter.\n"
    (ob-chat-ai-test-execute "chat-ai")
    (ob-chat-ai-test-wait-for ": abc")
    (should ob-chat-ai--jobs)
    (goto-char (point-min))
    (forward-line)
    (delete-region (point) (progn (re-search-forward "^After") (match-beginning 0)))
    (should (equal (ob-chat-ai-test-idle) "Before.\nAfter.\n"))
    (should-not (ob-chat-ai-process-open-requests))))

(ert-deftest ob-chat-ai-test-async-killed-buffer-drops-the-request ()
  (let ((ob-chat-ai-async 'always)
        (process-environment (cons "CHAT_AI_TEST_DELAY=0.2" process-environment))
        (other (generate-new-buffer "other")))
    (ob-chat-ai-test-with-org "#+begin_src chat-ai :model held\nabcdefghijklmnop\n#+end_src\n"
      (ob-chat-ai-test-execute "chat-ai")
      (ob-chat-ai-test-wait-for ": abc")
      (should ob-chat-ai--jobs)
      (kill-buffer (current-buffer))
      (ob-chat-ai-test-wait (lambda () (null (ob-chat-ai-process-open-requests))))
      (should-not ob-chat-ai--jobs))
    (should (equal (with-current-buffer other (buffer-string)) ""))
    (kill-buffer other)))

(ert-deftest ob-chat-ai-test-export-call-and-var-wait-for-the-reply ()
  (ob-chat-ai-test-async "#+name: ask
#+begin_src chat-ai :model m :exports results
exported answer
#+end_src

#+begin_src emacs-lisp :var answer=ask :exports none
(upcase answer)
#+end_src

#+CALL: ask()
"
    (require 'ox-ascii)
    (let ((exported (org-export-as 'ascii nil nil t)))
      (should (string-search "exported answer" exported))
      (should-not (string-search "waiting for" exported)))
    (ob-chat-ai-test-execute "emacs-lisp")
    (should (string-search "#+RESULTS:\n: EXPORTED ANSWER" (buffer-string)))
    (goto-char (point-min))
    (re-search-forward "^#\\+CALL")
    (org-ctrl-c-ctrl-c)
    (should (string-suffix-p "#+CALL: ask()\n\n#+RESULTS:\n: exported answer\n"
                             (buffer-string)))
    (should-not ob-chat-ai--jobs)))

(ert-deftest ob-chat-ai-test-async-no-and-post-wait-for-the-reply ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model m :async no\nwaited\n#+end_src\n"
    (ob-chat-ai-test-execute "chat-ai")
    (should (string-suffix-p "#+RESULTS:\n: waited\n" (buffer-string))))
  (ob-chat-ai-test-async "#+name: shout
#+begin_src emacs-lisp :var text=\"\"
(upcase text)
#+end_src

#+begin_src chat-ai :model m :post shout(text=*this*)
quiet
#+end_src
"
    (ob-chat-ai-test-execute "chat-ai")
    (should (string-suffix-p "#+RESULTS:\n: QUIET\n" (buffer-string)))))

;;;; Tests: the persistent helper

(ert-deftest ob-chat-ai-test-one-helper-serves-block-after-block ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nfirst\n#+end_src\n"
    (should (equal (ob-chat-ai-test-run) "first"))
    (let ((helper ob-chat-ai--helper))
      (should (process-live-p helper))
      (erase-buffer)
      (insert "#+begin_src chat-ai :model m :stream no\nsecond\n#+end_src\n")
      (should (equal (ob-chat-ai-test-run) "second"))
      (should (eq ob-chat-ai--helper helper))
      (should (equal (ob-chat-ai-test-helpers) (list helper))))))

(ert-deftest ob-chat-ai-test-a-killed-helper-is-restarted ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nagain\n#+end_src\n"
    (should (equal (ob-chat-ai-test-run) "again"))
    (let ((helper ob-chat-ai--helper))
      (kill-process helper)
      (ob-chat-ai-test-wait (lambda () (not (process-live-p helper))))
      (should (equal (ob-chat-ai-test-run) "again"))
      (should (process-live-p ob-chat-ai--helper))
      (should-not (eq ob-chat-ai--helper helper)))))

(ert-deftest ob-chat-ai-test-idle-helper-exits-and-comes-back ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nidle\n#+end_src\n"
    (let ((ob-chat-ai-helper-idle-timeout 0.2))
      (should (equal (ob-chat-ai-test-run) "idle"))
      (let ((helper ob-chat-ai--helper))
        (ob-chat-ai-test-wait (lambda () (not (process-live-p helper))))
        (should (zerop (process-exit-status helper)))
        (should-not (ob-chat-ai-test-helpers))
        (should (equal (ob-chat-ai-test-run) "idle"))))))

(ert-deftest ob-chat-ai-test-cancelling-one-block-leaves-the-other-streaming ()
  (ob-chat-ai-test-async "* One
#+begin_src chat-ai :model held
abcdefghijklmnopqrstuvwxyz
#+end_src

* Two
#+begin_src chat-ai :model slow
the other block
#+end_src
"
    (ob-chat-ai-test-execute "chat-ai")
    (ob-chat-ai-test-execute "^\\* Two\n#\\+begin_src")
    (ob-chat-ai-test-wait-for ": abc")
    (goto-char (point-min))
    (re-search-forward "chat-ai")
    (ob-chat-ai-cancel)
    (ob-chat-ai-test-release)
    (let ((text (ob-chat-ai-test-idle)))
      (should (string-match-p "cancelled; the reply is incomplete\\]\n\n\\* Two" text))
      (should (string-suffix-p "#+RESULTS:\n: the other block\n" text)))
    (should (equal (ob-chat-ai-test-helpers) (list ob-chat-ai--helper)))))

(ert-deftest ob-chat-ai-test-one-helper-per-request-when-asked ()
  (let ((ob-chat-ai-persistent-helper nil))
    (ob-chat-ai-test-async "#+begin_src chat-ai :model held\nabcdefghijklmnopqrstuvwxyz\n#+end_src\n"
      (when (process-live-p ob-chat-ai--helper)
        (kill-process ob-chat-ai--helper)
        (ob-chat-ai-test-wait (lambda () (null ob-chat-ai--helper))))
      (ob-chat-ai-test-execute "chat-ai")
      (ob-chat-ai-test-wait-for ": abc")
      (should (= 1 (length (ob-chat-ai-test-helpers))))
      (should-not ob-chat-ai--helper)
      (ob-chat-ai-cancel)
      (ob-chat-ai-test-wait (lambda () (null (ob-chat-ai-test-helpers))))
      (should (string-match-p "cancelled; the reply is incomplete\\]\n\\'"
                              (ob-chat-ai-test-idle)))
      (erase-buffer)
      (insert "#+begin_src chat-ai :model m\nalone\n#+end_src\n")
      (ob-chat-ai-test-execute "chat-ai")
      (should (string-suffix-p "#+RESULTS:\n: alone\n" (ob-chat-ai-test-idle)))
      (ob-chat-ai-test-wait (lambda () (null (ob-chat-ai-test-helpers)))))))

;;;; Tests: where requests go and which key they carry (issue 13)

(defvar ob-chat-ai-test-other-server nil
  "A second loopback server: an origin that a document names.")

(defun ob-chat-ai-test-other-server ()
  "Start the second loopback server unless it runs; return its base URL."
  (unless (process-live-p ob-chat-ai-test-other-server)
    (let ((buffer (generate-new-buffer " *other loopback server*")))
      (setq ob-chat-ai-test-other-server
            (make-process
             :name "other-loopback-server"
             :buffer buffer
             :command (list ob-chat-ai-test-python
                            (expand-file-name "tests/loopback_server.py"
                                              ob-chat-ai-test-root))
             :coding 'utf-8-unix
             :noquery t
             :connection-type 'pipe
             :stderr (get-buffer-create " *other loopback server stderr*")))
      (with-current-buffer buffer
        (with-timeout (30 (error "The second loopback server did not start"))
          (while (not (string-match "\\`{\"port\": \\([0-9]+\\)}\n" (buffer-string)))
            (accept-process-output ob-chat-ai-test-other-server 0.1)))
        (process-put ob-chat-ai-test-other-server 'port
                     (string-to-number (match-string 1 (buffer-string)))))))
  (with-current-buffer (process-buffer ob-chat-ai-test-other-server)
    (erase-buffer))
  (format "http://127.0.0.1:%d/v1" (process-get ob-chat-ai-test-other-server 'port)))

(defun ob-chat-ai-test-other-received ()
  "Return the requests that the second server received."
  (accept-process-output ob-chat-ai-test-other-server 0.2)
  (mapcar (lambda (line) (json-parse-string line :object-type 'alist :null-object nil))
          (split-string (with-current-buffer (process-buffer ob-chat-ai-test-other-server)
                          (buffer-string))
                        "\n" t)))

(defun ob-chat-ai-test-header (request name)
  "Return header NAME of the received REQUEST."
  (alist-get name (alist-get 'headers request)))

(defmacro ob-chat-ai-test-with-authinfo (lines &rest body)
  "Run BODY with auth-source reading a temporary file holding LINES."
  (declare (indent 1) (debug t))
  `(let ((authinfo (make-temp-file "authinfo")))
     (unwind-protect
         (progn
           (with-temp-file authinfo (insert ,lines))
           (let ((auth-sources (list authinfo))
                 (auth-source-do-cache nil))
             ,@body))
       (delete-file authinfo))))

(ert-deftest ob-chat-ai-test-keys-env-key-never-reaches-a-host-the-document-names ()
  (let ((other (ob-chat-ai-test-other-server)))
    (dolist (text (list (format "#+begin_src chat-ai :model m :base-url %s\nhi\n#+end_src\n"
                                other)
                        (format "#+PROPERTY: header-args:chat-ai :base-url %s

#+begin_src chat-ai :model m
hi
#+end_src
" other)))
      (ob-chat-ai-test-with-org text
        (org-set-regexps-and-options)
        (setenv "OPENAI_API_KEY" ob-chat-ai-test-key)
        (ob-chat-ai-test-other-server)
        (should (equal (ob-chat-ai-test-run) "hi"))
        (let ((received (ob-chat-ai-test-other-received)))
          (should (= 1 (length received)))
          (should-not (ob-chat-ai-test-header (car received) 'Authorization))
          (should-not (string-search ob-chat-ai-test-key (format "%S" received))))
        (should-not (ob-chat-ai-test-received))))
    (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
      (setenv "OPENAI_API_KEY" ob-chat-ai-test-key)
      (should (equal (ob-chat-ai-test-run) "hi"))
      (should (equal (ob-chat-ai-test-authorization)
                     (concat "Bearer " ob-chat-ai-test-key))))))

(ert-deftest ob-chat-ai-test-keys-401-says-which-key-was-not-sent ()
  (let ((other (ob-chat-ai-test-other-server)))
    (ob-chat-ai-test-with-org
        (format "#+begin_src chat-ai :model error-401 :base-url %s\nhi\n#+end_src\n" other)
      (setenv "OPENAI_API_KEY" ob-chat-ai-test-key)
      (should (equal (ob-chat-ai-test-run)
                     (format "chat-ai error: HTTP 401 scenario_error: Scenario error \
401; you sent no key. (no API key was sent: $OPENAI_API_KEY goes only to %s, the \
openai provider's address, not to %s; for a key there, add an auth-source entry \
\(machine 127.0.0.1) or a provider of your own to %s)"
                             (string-remove-suffix "/v1" base-url)
                             (string-remove-suffix "/v1" other)
                             (expand-file-name "no-such-providers.json"
                                               temporary-file-directory))))))
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model error-401\nhi\n#+end_src\n"
    (should (equal (ob-chat-ai-test-run)
                   "chat-ai error: HTTP 401 scenario_error: Scenario error 401; you \
sent no key. (no API key was sent; keys are looked for in :api-key, auth-source \
\(machine 127.0.0.1) and $OPENAI_API_KEY)"))))

(ert-deftest ob-chat-ai-test-keys-auth-source-key-reaches-its-host-only ()
  (let ((other (ob-chat-ai-test-other-server)))
    (ob-chat-ai-test-with-org
        (format "#+begin_src chat-ai :model m :base-url %s\nhi\n#+end_src\n"
                (replace-regexp-in-string "127\\.0\\.0\\.1" "localhost" other))
      (ob-chat-ai-test-with-authinfo "machine localhost password sk-for-localhost\n"
        (should (equal (ob-chat-ai-test-run) "hi"))
        (should (equal (ob-chat-ai-test-header (car (ob-chat-ai-test-other-received))
                                               'Authorization)
                       "Bearer sk-for-localhost"))
        (erase-buffer)
        (insert "#+begin_src chat-ai :model m\nhi\n#+end_src\n")
        (should (equal (ob-chat-ai-test-run) "hi"))
        (should-not (ob-chat-ai-test-authorization))))
    (ob-chat-ai-test-with-org
        (format "#+begin_src chat-ai :model m :base-url http://127.0.0.1:%s\\@localhost/v1
hi
#+end_src
" (process-get ob-chat-ai-test-other-server 'port))
      (ob-chat-ai-test-with-authinfo "machine localhost password sk-for-localhost\n"
        (ob-chat-ai-test-other-server)
        (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                       "chat-ai: :base-url must not contain a backslash: programs \
disagree on which host such an address names"))
        (should-not (ob-chat-ai-test-other-received))
        (should-not (ob-chat-ai-test-received))))))

(ert-deftest ob-chat-ai-test-keys-auth-source-key-through-an-http-proxy ()
  (dolist (case '(("http://api.example.test/v1" . "Bearer sk-for-example")
                  ("http://attacker.example\\@api.example.test/v1" . nil)))
    (ob-chat-ai-test-with-org
        (format "#+begin_src chat-ai :model m :base-url %s\nhi\n#+end_src\n" (car case))
      (setenv "HTTP_PROXY" (string-remove-suffix "/v1" base-url))
      (setenv "http_proxy" nil)
      (setenv "NO_PROXY" nil)
      (setenv "no_proxy" nil)
      (ob-chat-ai-test-with-authinfo "machine api.example.test password sk-for-example\n"
        (if (null (cdr case))
            (progn
              (should (string-prefix-p "chat-ai: :base-url must not contain a backslash"
                                       (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)))
              (should-not (ob-chat-ai-test-received)))
          (should (equal (ob-chat-ai-test-run) "hi"))
          (let ((request (car (ob-chat-ai-test-received 1))))
            (should (equal (ob-chat-ai-test-header request 'Host) "api.example.test"))
            (should (equal (ob-chat-ai-test-header request 'Authorization)
                           (cdr case)))))))))

(ert-deftest ob-chat-ai-test-keys-key-block-goes-where-the-document-says ()
  (let ((other (ob-chat-ai-test-other-server)))
    (ob-chat-ai-test-with-org
        (format "#+name: EVENT_TOKEN
#+begin_src text :exports none
sk-from-the-document
#+end_src

#+begin_src chat-ai :model m :base-url %s :api-key <<EVENT_TOKEN>>
hi
#+end_src
" other)
      (setenv "OPENAI_API_KEY" ob-chat-ai-test-key)
      (goto-char (point-min))
      (re-search-forward "^#\\+begin_src chat-ai")
      (should (equal (org-babel-execute-src-block) "hi"))
      (should (equal (ob-chat-ai-test-header (car (ob-chat-ai-test-other-received))
                                             'Authorization)
                     "Bearer sk-from-the-document")))))

(ert-deftest ob-chat-ai-test-keys-previews-mask-credential-headers ()
  (ob-chat-ai-test-with-org
      (format "#+begin_src chat-ai :model m :dry-run yes :headers '(\"Authorization: Bearer %s\" \"x-api-key: %s\" \"X-Team-Token: %s\" \"openai-event-code: me/1\")
hi
#+end_src
" ob-chat-ai-test-key ob-chat-ai-test-key ob-chat-ai-test-key)
    (let ((headers (alist-get 'headers (json-parse-string (ob-chat-ai-test-run)
                                                          :object-type 'alist))))
      (should (equal (alist-get 'Authorization headers) "Bearer ***"))
      (should (equal (alist-get 'x-api-key headers) "***"))
      (should (equal (alist-get 'X-Team-Token headers) "***"))
      (should (equal (alist-get 'openai-event-code headers) "me/1")))
    (should-not (string-search ob-chat-ai-test-key
                               (buffer-substring (org-babel-where-is-src-block-result)
                                                 (point-max))))
    (should-not (ob-chat-ai-test-received))))

(ert-deftest ob-chat-ai-test-keys-bad-urls-and-header-names-say-what-is-wrong ()
  (dolist (case '((":base-url file:///etc/passwd"
                   "chat-ai: :base-url must be an http:// or https:// address, \
not file://")
                  (":base-url api.example.test/v1"
                   "chat-ai: :base-url api.example.test/v1 has no scheme; write it \
as https://api.example.test/v1 (or http:// for a server without TLS)")
                  (":headers \"Bad Header: y\""
                   "chat-ai: :headers must have valid names; \"Bad Header\" is not \
one (letters, digits and !#$%&'*+-.^_`|~ only, no spaces)")))
    (ob-chat-ai-test-with-org
        (format "#+begin_src chat-ai :model m %s\nhi\n#+end_src\n" (car case))
      (let ((original (buffer-string)))
        (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run) (cadr case)))
        (should (equal (buffer-string) original))
        (should-not (ob-chat-ai-test-received))))))

(ert-deftest ob-chat-ai-test-keys-expand-and-tangle-give-the-prompt-without-the-helper ()
  (let* ((directory (make-temp-file "tangle" t))
         (org-file (expand-file-name "prompts.org" directory))
         (prompt-file (expand-file-name "prompt.txt" directory)))
    (unwind-protect
        (ob-chat-ai-test-with-org
            "#+begin_src chat-ai :model m :var who=\"a poet\" :tangle prompt.txt
As $who, say hello.
#+end_src
"
          (write-region (point-min) (point-max) org-file)
          (let ((ob-chat-ai-helper-command '("/nonexistent/chat-ai" "--serve"))
                (started ob-chat-ai--next-id)
                (buffer (find-file-noselect org-file)))
            (unwind-protect
                (with-current-buffer buffer
                  (search-forward "As")
                  (should (equal (org-babel-expand-src-block) "As a poet, say hello."))
                  (org-babel-tangle))
              (kill-buffer buffer))
            (should (equal (with-temp-buffer
                             (insert-file-contents prompt-file)
                             (buffer-string))
                           "As a poet, say hello.\n"))
            (should (= started ob-chat-ai--next-id))))
      (delete-directory directory t))))

(ert-deftest ob-chat-ai-test-keys-providers-come-from-the-helper ()
  (let ((file (make-temp-file "providers" nil ".json")))
    (unwind-protect
        (ob-chat-ai-test-with-org "#+begin_src chat-ai :provider mine\nhi\n#+end_src\n"
          (setenv "CHAT_AI_PROVIDERS_FILE" file)
          (setenv "OPENAI_BASE_URL" "http://127.0.0.1:9/unused")
          (with-temp-file file (insert "{}"))
          (set-file-times file (time-subtract nil 10))
          (should (equal (mapcar (lambda (entry) (alist-get 'name entry))
                                 (ob-chat-ai-providers))
                         '("openai" "azure" "local")))
          (let ((asked ob-chat-ai--next-id))
            (ob-chat-ai-providers)
            (should (= asked ob-chat-ai--next-id)))
          (with-temp-file file
            (insert (json-serialize `((mine (base_url . ,base-url) (model . "mine-model"))))))
          (should (equal (ob-chat-ai-test-run) "hi"))
          (should (equal (alist-get 'model (ob-chat-ai-test-body)) "mine-model"))
          (should (equal (alist-get 'provider org-babel-header-args:chat-ai)
                         '((openai azure local mine)))))
      (delete-file file))))

(defconst ob-chat-ai-test-resolution-cases
  '(("openai at $OPENAI_BASE_URL" (("OPENAI_API_KEY" . "sk-env")) nil "" ())
    ("openai at its default address" (("OPENAI_BASE_URL") ("OPENAI_API_KEY" . "sk-env"))
     nil "" ())
    ("$CHAT_AI_MODEL" (("CHAT_AI_MODEL" . "env-model")) nil "" ())
    ("local at $CHAT_AI_LOCAL_URL" (("CHAT_AI_LOCAL_URL" . "http://127.0.0.1:9/v1"))
     nil ":provider local" ("-p" "local"))
    ("local at $CHAT_AI_LOCAL_PORT" (("CHAT_AI_LOCAL_PORT" . "9999"))
     nil ":provider local" ("-p" "local"))
    ("azure deployments" (("AZURE_OPENAI_ENDPOINT" . "https://me.openai.azure.com")
                          ("AZURE_OPENAI_API_KEY" . "az-env")
                          ("OPENAI_API_VERSION" . "2024-10-21"))
     nil ":provider azure :model dep" ("-p" "azure" "-m" "dep"))
    ("azure v1" (("AZURE_OPENAI_ENDPOINT" . "https://me.openai.azure.com/openai/v1")
                 ("AZURE_OPENAI_API_KEY" . "az-env"))
     nil ":provider azure :model gpt-4o" ("-p" "azure" "-m" "gpt-4o"))
    ("providers.json entry" (("MY_KEY" . "sk-mine"))
     ((mine (base_url . "https://llm.example.test/v1") (model . "mine-model")
            (api_key_env . "MY_KEY") (headers (X-Team . "t1"))))
     ":provider mine" ("-p" "mine"))
    ("providers.json openai entry" (("OPENAI_API_KEY" . "sk-env"))
     ((openai (base_url . "https://proxy.example.test/v1")
              (headers (openai-event-code . "me/1"))))
     "" ())
    ("headers instead of a key" (("OPENAI_BASE_URL")) nil
     ":headers \"X-Code: 1\"" ("-H" "X-Code: 1")))
  "How blocks and the CLI resolve providers: (NAME ENV PROVIDERS HEADER-ARGS CLI-ARGS).
ENV sets (or, without a value, unsets) variables; PROVIDERS is the
providers.json object.")

(defun ob-chat-ai-test-canonical (value)
  "Return JSON VALUE with every object's keys sorted, for comparing."
  (cond
   ((and (consp value) (consp (car value)) (symbolp (caar value)))
    (sort (mapcar (lambda (entry) (cons (car entry) (ob-chat-ai-test-canonical (cdr entry))))
                  value)
          (lambda (a b) (string< (car a) (car b)))))
   ((vectorp value) (vconcat (mapcar #'ob-chat-ai-test-canonical value)))
   (t value)))

(ert-deftest ob-chat-ai-test-keys-blocks-and-the-cli-resolve-alike ()
  (let ((file (make-temp-file "providers" nil ".json")))
    (unwind-protect
        (dolist (case ob-chat-ai-test-resolution-cases)
          (pcase-let ((`(,name ,env ,providers ,header-args ,cli-args) case))
            (ob-chat-ai-test-with-org
                (format "#+begin_src chat-ai :dry-run yes %s\nhi\n#+end_src\n" header-args)
              (with-temp-file file (insert (if providers (json-serialize providers) "{}")))
              (setenv "CHAT_AI_PROVIDERS_FILE" file)
              (dolist (variable env)
                (setenv (car variable) (cdr variable)))
              (let ((block (json-parse-string (ob-chat-ai-test-run) :object-type 'alist))
                    (cli (with-temp-buffer
                           (should (zerop (apply #'call-process ob-chat-ai-test-python
                                                 nil '(t nil) nil "-m" "chat_ai_helper"
                                                 "--dry-run" (append cli-args '("hi")))))
                           (json-parse-string (buffer-string) :object-type 'alist))))
                (ert-info ((format "%s: %S" name block))
                  (should (equal (alist-get 'url block) (alist-get 'url cli)))
                  (should (equal (ob-chat-ai-test-canonical (alist-get 'headers block))
                                 (ob-chat-ai-test-canonical (alist-get 'headers cli))))
                  (should (equal (ob-chat-ai-test-canonical (alist-get 'body block))
                                 (ob-chat-ai-test-canonical (alist-get 'body cli)))))))))
      (delete-file file))))

;;;; Tests: whatever the server or the helper sends, each block ends

(defvar ob-chat-ai-test-hostile nil
  "The hostile server process (tests/hostile_server.py).")

(defun ob-chat-ai-test-hostile-url ()
  "Start the hostile server unless it runs, and return its base URL."
  (unless (process-live-p ob-chat-ai-test-hostile)
    (let ((buffer (generate-new-buffer " *hostile server*")))
      (setq ob-chat-ai-test-hostile
            (make-process
             :name "hostile-server"
             :buffer buffer
             :command (list ob-chat-ai-test-python
                            (expand-file-name "tests/hostile_server.py"
                                              ob-chat-ai-test-root))
             :coding 'utf-8-unix
             :noquery t
             :connection-type 'pipe))
      (with-current-buffer buffer
        (with-timeout (30 (error "The hostile server did not start"))
          (while (not (string-match "{\"port\": \\([0-9]+\\)}" (buffer-string)))
            (accept-process-output ob-chat-ai-test-hostile 0.1))))))
  (with-current-buffer (process-buffer ob-chat-ai-test-hostile)
    (string-match "{\"port\": \\([0-9]+\\)}" (buffer-string))
    (format "http://127.0.0.1:%s/v1" (match-string 1 (buffer-string)))))

(defun ob-chat-ai-test-hostile-block (model &optional headers)
  "Return a block asking MODEL of the hostile server, with more HEADERS."
  (format "#+begin_src chat-ai :model %s :base-url %s :max-retries 0%s\nSay hello\n#+end_src\n"
          model (ob-chat-ai-test-hostile-url) (or headers "")))

(defconst ob-chat-ai-test-hostile-cases
  '(("content-42" "choices[0].delta.content is 42, not a string")
    ("choices-oops" "choices[0] is \"oops\", not an object")
    ("delta-text" "choices[0].delta is \"text\", not an object")
    ("index-zero" "choices[0].index is \"zero\", not 0")
    ("index-big" "choices[0].index is 1000000000000, not 0")
    ("chunk-array" "[1, 2] is not an object")
    ("truncated" "not JSON")
    ("no-done@close" "the stream ended before [DONE]")
    ("bad-utf8" "bytes that are not UTF-8")
    ("event-error" "Overloaded, try later")
    ("bad-gzip" "could not be decompressed")
    ("short-length" "the connection closed mid-stream")
    ("whole-choices-ints" "choices[0] is 1, not an object" " :stream no")
    ("whole-message-string" "choices[0].message is \"hi\", not an object" " :stream no")
    ("whole-index-zero" "choices[0].index is \"zero\", not 0" " :stream no"))
  "Hostile scenarios, a phrase of the error line each ends with, and header args.")

(ert-deftest ob-chat-ai-test-hostile-replies-end-each-block-with-one-line ()
  (dolist (case ob-chat-ai-test-hostile-cases)
    (ob-chat-ai-test-with-org (ob-chat-ai-test-hostile-block (car case) (nth 2 case))
      (let* ((result (ob-chat-ai-test-run))
             (line (car (last (split-string result "\n")))))
        (should (string-prefix-p "chat-ai error: " line))
        (should (string-search (nth 1 case) line))
        (should (or (equal result line)
                    (string-suffix-p (concat "\n\n" line) result))))))
  (dolist (model '("good" "good@close" "gzip@length" "crlf" "keepalive"))
    (ob-chat-ai-test-with-org (ob-chat-ai-test-hostile-block model)
      (should (equal (ob-chat-ai-test-run) "Hello, wörld 🎉 — fine")))))

(ert-deftest ob-chat-ai-test-hostile-replies-resolve-async-placeholders ()
  (ob-chat-ai-test-async
      (concat (ob-chat-ai-test-hostile-block "content-42")
              (ob-chat-ai-test-hostile-block "index-zero@close")
              (ob-chat-ai-test-hostile-block "whole-message-string" " :stream no")
              (ob-chat-ai-test-hostile-block "good@close"))
    (org-babel-execute-buffer)
    (let ((text (ob-chat-ai-test-idle)))
      (should-not (string-search "waiting for" text))
      (should (string-search ": chat-ai error: the stream held a malformed chunk: \
choices[0].delta.content is 42" text))
      (should (string-search ": chat-ai error: the stream held a malformed chunk: \
choices[0].index is \"zero\"" text))
      (should (string-search "choices[0].message is \"hi\", not an object" text))
      (should (string-suffix-p "#+RESULTS:\n: Hello, wörld 🎉 — fine\n" text)))))

(defconst ob-chat-ai-test-fake-helper-start
  (concat "import json, sys\n"
          "def requests():\n"
          "    for line in sys.stdin:\n"
          "        m = json.loads(line)\n"
          "        if m.get('type') == 'hello':\n"
          "            print(json.dumps({'id': m['id'], 'type': 'hello', "
          "'version': 'fake', 'protocol': 1}), flush=True)\n"
          "            continue\n"
          "        yield m\n")
  "Python that a fake helper starts with: `requests()' yields the requests.
It answers Emacs's hello as a helper of today's protocol does.")

(defun ob-chat-ai-test-fake-helper (script)
  "Return a helper command running Python SCRIPT, which reads requests on stdin."
  (list ob-chat-ai-test-python "-c"
        (concat ob-chat-ai-test-fake-helper-start
                "for m in requests():\n"
                "    i = m['id']\n"
                "    " script "\n")))

(defmacro ob-chat-ai-test-with-fake-helper (script &rest body)
  "Run BODY with the helper replaced by Python SCRIPT; stop it afterwards."
  (declare (indent 1) (debug t))
  `(let ((ob-chat-ai-helper-command (ob-chat-ai-test-fake-helper ,script)))
     (unwind-protect (progn ,@body)
       (when (process-live-p ob-chat-ai--helper)
         (delete-process ob-chat-ai--helper)))))

(ert-deftest ob-chat-ai-test-an-unreadable-event-ends-its-block ()
  (dolist (case '(("{\"id\": i, \"type\": \"delta\", \"choice\": \"zero\", \"text\": \"x\"}"
                   "the helper's delta event cannot be read: \
choice is \"zero\", not the number of a choice")
                  ("{\"id\": i, \"type\": \"delta\", \"choice\": 0, \"text\": 42}"
                   "the helper's delta event cannot be read: \
text is 42, not a string")
                  ("{\"id\": i, \"type\": \"done\", \"finish_reasons\": 5}"
                   "the helper's done event cannot be read: \
finish_reasons is 5, not a list of reasons")
                  ("{\"id\": i, \"type\": \"error\", \"message\": [1]}"
                   "the helper's error event cannot be read: \
message is (1), not a string")
                  ("{\"id\": i}"
                   "the helper sent an event that cannot be read: \
it has no type")))
    (let ((script (format "print(json.dumps(%s), flush=True)" (car case))))
      (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
        (ob-chat-ai-test-with-fake-helper script
          (should (equal (ob-chat-ai-test-run)
                         (concat "chat-ai error: " (cadr case)))))))
    (let ((script (format "print(json.dumps(%s), flush=True)" (car case))))
      (ob-chat-ai-test-async "#+begin_src chat-ai :model m\nhi\n#+end_src\n"
        (ob-chat-ai-test-with-fake-helper script
          (ob-chat-ai-test-execute "chat-ai")
          (should (string-suffix-p (concat "#+RESULTS:\n: chat-ai error: " (cadr case) "\n")
                                   (ob-chat-ai-test-idle))))))))

(ert-deftest ob-chat-ai-test-a-failing-delta-callback-ends-its-request ()
  (ob-chat-ai-test-with-org ""
    (let* ((final nil)
           (request (ob-chat-ai-process-send
                     `((base_url . ,(ob-chat-ai-test-hostile-url))
                       (body . ((model . "good")
                                (messages . [((role . "user") (content . "hi"))])
                                (stream . t))))
                     :on-delta (lambda (_event) (error "Cannot show this"))
                     :on-finish (lambda (event) (setq final event)))))
      (ob-chat-ai-test-wait (lambda () final))
      (should (eq (ob-chat-ai-request-final request) final))
      (should (equal (alist-get 'message final)
                     "the delta could not be shown: Cannot show this"))
      (should-not (ob-chat-ai-process-open-requests)))))

(ert-deftest ob-chat-ai-test-a-request-the-helper-forgot-ends-after-its-timeout ()
  (let ((ob-chat-ai--silence-margin 1))
    (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :timeout 1\nhi\n#+end_src\n"
      (ob-chat-ai-test-with-fake-helper "pass"
        (let ((result (ob-chat-ai-test-run)))
          (should (string-match-p "\\`chat-ai error: the helper said nothing about \
this request for [0-9]+ seconds; it was dropped" result))
          (should (process-live-p ob-chat-ai--helper))
          (should-not (ob-chat-ai-process-open-requests)))))
    (ob-chat-ai-test-async "#+begin_src chat-ai :model m :timeout 1\nhi\n#+end_src\n"
      (ob-chat-ai-test-with-fake-helper "pass"
        (ob-chat-ai-test-execute "chat-ai")
        (should (string-match-p "#\\+RESULTS:\n: chat-ai error: the helper said nothing"
                                (ob-chat-ai-test-idle)))
        (should-not ob-chat-ai--watchdog)))))

(ert-deftest ob-chat-ai-test-a-late-event-of-a-cancelled-request-is-dropped ()
  (ob-chat-ai-test-with-org ""
    (let ((ob-chat-ai-helper-command
           (list ob-chat-ai-test-python "-c"
                 (concat ob-chat-ai-test-fake-helper-start
                         "ids = []\n"
                         "for m in requests():\n"
                         "    if m.get('type') == 'cancel': continue\n"
                         "    ids.append(m['id'])\n"
                         "    if len(ids) == 2:\n"
                         "        for i, t in ((ids[0], 'stale'), (ids[1], 'fresh')):\n"
                         "            print(json.dumps({'id': i, 'type': 'delta', "
                         "'choice': 0, 'text': t}))\n"
                         "        print(json.dumps({'id': ids[1], 'type': 'done', "
                         "'finish_reasons': ['stop']}), flush=True)\n")))
          (texts nil))
      (unwind-protect
          (let ((first (ob-chat-ai-process-send '((body . ((model . "m")))))))
            (ob-chat-ai-process-cancel first)
            (let ((second (ob-chat-ai-process-send
                           '((body . ((model . "m"))))
                           :on-delta (lambda (event) (push (alist-get 'text event) texts)))))
              (should (equal (alist-get 'type (ob-chat-ai-process-wait second)) "done"))
              (should (equal texts '("fresh")))))
        (when (process-live-p ob-chat-ai--helper)
          (delete-process ob-chat-ai--helper))))))

(ert-deftest ob-chat-ai-test-a-timeout-beyond-reason-is-refused ()
  (dolist (timeout '("1e19" "0"))
    (ob-chat-ai-test-with-org
        (format "#+begin_src chat-ai :model m :timeout %s\nhi\n#+end_src\n" timeout)
      (should (string-prefix-p
               "chat-ai: :timeout must be a number of seconds above 0 and at most 86400, not "
               (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)))
      (should-not (ob-chat-ai-test-received)))))

;;;; Tests: the document is never damaged and never lies

(defconst ob-chat-ai-test-long-body
  (mapconcat (lambda (i) (format "line %02d of a reply that takes a while" i))
             (number-sequence 1 4) " ")
  "A one-line prompt the slow model echoes for seconds.")

(defconst ob-chat-ai-test-next-block
  "\n#+name: next\n#+begin_src emacs-lisp\n(+ 1 2)\n#+end_src\n"
  "A block after the one that runs, which a reply must never touch.")

(ert-deftest ob-chat-ai-test-rerun-while-streaming-keeps-one-whole-reply ()
  (ob-chat-ai-test-async (concat "#+begin_src chat-ai :model held\n" ob-chat-ai-test-long-body
                                 "\n#+end_src\n" ob-chat-ai-test-next-block)
    (ob-chat-ai-test-execute "chat-ai")
    (ob-chat-ai-test-wait-for ": line 01")
    (should ob-chat-ai--jobs)
    (ob-chat-ai-test-execute "chat-ai")
    (should (= 1 (length ob-chat-ai--jobs)))
    (ob-chat-ai-test-release)
    (should (equal (ob-chat-ai-test-idle)
                   (concat "#+begin_src chat-ai :model held\n" ob-chat-ai-test-long-body
                           "\n#+end_src\n\n#+RESULTS:\n: " ob-chat-ai-test-long-body "\n"
                           ob-chat-ai-test-next-block)))
    (should (= 2 (length (ob-chat-ai-test-received 2))))))

(ert-deftest ob-chat-ai-test-revert-and-undo-mid-stream-touch-only-the-result ()
  (let* ((text (concat "#+begin_src chat-ai :model held\n" ob-chat-ai-test-long-body
                       "\n#+end_src\n" ob-chat-ai-test-next-block))
         (file (make-temp-file "chat-ai" nil ".org" text)))
    (ob-chat-ai-test-async ""
      (with-current-buffer (find-file-noselect file)
        (unwind-protect
            (progn
              (ob-chat-ai-test-execute "chat-ai")
              (ob-chat-ai-test-wait-for ": line 01")
              (should-not (buffer-modified-p))
              (goto-char (point-max))
              (insert "typed\n")
              (revert-buffer t t)
              (goto-char (point-max))
              (insert "typed again\n")
              (undo-boundary)
              (let ((last-command nil)) (undo))
              (should ob-chat-ai--jobs)
              (ob-chat-ai-test-release)
              (should (equal (ob-chat-ai-test-idle)
                             (concat "#+begin_src chat-ai :model held\n"
                                     ob-chat-ai-test-long-body
                                     "\n#+end_src\n\n#+RESULTS:\n: "
                                     ob-chat-ai-test-long-body "\n"
                                     ob-chat-ai-test-next-block))))
          (set-buffer-modified-p nil)
          (kill-buffer)
          (delete-file file))))))

(ert-deftest ob-chat-ai-test-one-undo-removes-the-whole-reply ()
  (ob-chat-ai-test-async (concat "#+begin_src chat-ai :model held\n" ob-chat-ai-test-long-body "\n#+end_src\n\n#+RESULTS:\n: old\n\nBelow.\n")
    (buffer-enable-undo)
    (ob-chat-ai-test-execute "chat-ai")
    (undo-boundary)
    (ob-chat-ai-test-wait-for ": line 01")
    (goto-char (point-max))
    (insert "typed meanwhile\n")
    (undo-boundary)
    (should ob-chat-ai--jobs)
    (ob-chat-ai-test-release)
    (should (string-search (concat ": " ob-chat-ai-test-long-body "\n") (ob-chat-ai-test-idle)))
    (let ((last-command nil)) (undo))
    (should (equal (buffer-string)
                   (concat "#+begin_src chat-ai :model held\n" ob-chat-ai-test-long-body "\n#+end_src\n\n#+RESULTS:\n: old\n\nBelow.\ntyped meanwhile\n")))))

(defconst ob-chat-ai-test-structured-reply
  (concat "Before\n:end:\n* Heading\n#+RESULTS:\n:PROPERTIES:\n"
          "#+begin_src emacs-lisp\n(message \"ran\")\n#+end_src\nAfter")
  "A reply that would make Org structure of its own.")

(defun ob-chat-ai-test-run-twice-contained (header)
  "Run a block with HEADER twice; check its reply stays in its result.
Return the text of the result."
  (ob-chat-ai-test-with-org
      (format "* Top\n#+begin_src chat-ai :model m %s\n%s\n#+end_src\n%s"
              header (org-escape-code-in-string ob-chat-ai-test-structured-reply)
              ob-chat-ai-test-next-block)
    (ob-chat-ai-test-run)
    (let ((once (buffer-string)))
      (ob-chat-ai-test-run)
      (should (equal (buffer-string) once))
      (should (string-suffix-p ob-chat-ai-test-next-block once))
      (should (= 1 (length (org-map-entries #'ignore))))
      (let ((blocks nil))
        (org-babel-map-src-blocks nil (push lang blocks))
        (should (equal blocks '("emacs-lisp" "chat-ai"))))
      (goto-char (point-min))
      (re-search-forward "^#\\+RESULTS:")
      (let ((element (org-element-at-point)))
        (buffer-substring (org-element-property :begin element)
                          (org-element-property :end element))))))

(ert-deftest ob-chat-ai-test-a-reply-never-makes-structure ()
  (dolist (header '(":results drawer" ":format org :results drawer" ":format org" ""))
    (ob-chat-ai-test-run-twice-contained header))
  (should (string-search
           ":results:\nBefore\n,:end:\n,* Heading\n,#+RESULTS:\n,:PROPERTIES:\n,#+begin_src"
           (ob-chat-ai-test-run-twice-contained ":results drawer")))
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :format org :results drawer
Text

```elisp
(message \"ran\")
```
#+end_src
"
    (should (string-search "#+begin_src emacs-lisp :eval never\n(message \"ran\")\n#+end_src"
                           (progn (ob-chat-ai-test-run) (buffer-string))))))

(ert-deftest ob-chat-ai-test-contained-reply-reads-back-as-sent-in-a-session ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :session s :results drawer
one
:end:
#+end_src

#+begin_src chat-ai :model m :session s
two
#+end_src
"
    (ob-chat-ai-test-run)
    (ob-chat-ai-test-execute "^two")
    (goto-char (point-min))
    (re-search-forward "^two")
    (org-babel-execute-src-block)
    (should (equal (alist-get 'content (aref (alist-get 'messages (ob-chat-ai-test-body
                                                                   (cadr (ob-chat-ai-test-received 2))))
                                             1))
                   "one\n:end:"))))

(ert-deftest ob-chat-ai-test-cache-keeps-only-a-whole-reply ()
  (dolist (model '("error-400" "empty" "length"))
    (ob-chat-ai-test-async (format "#+begin_src chat-ai :model %s :cache yes\nhi\n#+end_src\n" model)
      (ob-chat-ai-test-execute "chat-ai")
      (should-not (string-search "#+RESULTS[" (ob-chat-ai-test-idle)))
      (ob-chat-ai-test-execute "chat-ai")
      (ob-chat-ai-test-idle)
      (should (= 2 (length (ob-chat-ai-test-received 2))))))
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model error-400 :cache yes\nhi\n#+end_src\n"
    (ob-chat-ai-test-run)
    (should-not (string-search "#+RESULTS[" (buffer-string)))
    (ob-chat-ai-test-run)
    (should (= 2 (length (ob-chat-ai-test-received 2)))))
  (ob-chat-ai-test-async (concat "#+begin_src chat-ai :model held :cache yes\n" ob-chat-ai-test-long-body "\n#+end_src\n")
    (ob-chat-ai-test-execute "chat-ai")
    (ob-chat-ai-test-wait-for ": line 01")
    (should-not (string-search "#+RESULTS" (buffer-string)))
    (ob-chat-ai-cancel)
    (should-not (string-search "#+RESULTS[" (ob-chat-ai-test-idle)))
    (ob-chat-ai-test-release)
    (ob-chat-ai-test-execute "chat-ai")
    (should (string-search "#+RESULTS[" (ob-chat-ai-test-idle)))
    (ob-chat-ai-test-execute "chat-ai")
    (should-not ob-chat-ai--jobs)
    (should (= 2 (length (ob-chat-ai-test-received 2))))
    (should (string-suffix-p (concat "]:\n: " ob-chat-ai-test-long-body "\n") (buffer-string)))))

(ert-deftest ob-chat-ai-test-referenced-block-answers-at-once-with-update-intermediate ()
  (let ((org-babel-update-intermediate t))
    (ob-chat-ai-test-async "#+name: first
#+begin_src chat-ai :model slow
answer
#+end_src

#+begin_src emacs-lisp :var r=first() :noweb yes
(concat (upcase r) \"<<first()>>\")
#+end_src
"
      (ob-chat-ai-test-execute "emacs-lisp")
      (should-not ob-chat-ai--jobs)
      (let ((text (ob-chat-ai-test-idle)))
        (should (string-search "emacs-lisp :var r=first() :noweb yes\n(concat (upcase r) \"<<first()>>\")\n#+end_src\n\n#+RESULTS:\n: ANSWERanswer\n"
                               text))
        (should-not (string-search "waiting for" text))))))

(ert-deftest ob-chat-ai-test-after-execute-hook-runs-once-with-the-reply ()
  (let ((seen nil))
    (ob-chat-ai-test-async "#+begin_src chat-ai :model slow\nabcdef\n#+end_src\n"
      (let ((hook (lambda () (push (buffer-string) seen))))
        (add-hook 'org-babel-after-execute-hook hook)
        (unwind-protect
            (progn
              (ob-chat-ai-test-execute "chat-ai")
              (ob-chat-ai-test-idle))
          (remove-hook 'org-babel-after-execute-hook hook))))
    (should (= 1 (length seen)))
    (should (string-suffix-p "#+RESULTS:\n: abcdef\n" (car seen)))))

;; Babel's defaults with no :results give a block no :result-params.
(ert-deftest ob-chat-ai-test-no-results-default-keeps-the-placeholder-out ()
  (let ((org-babel-default-header-args
         (assq-delete-all :results (copy-sequence org-babel-default-header-args)))
        (text "#+begin_src chat-ai :model held\nabc\ndef\n#+end_src\n\nAfter.\n"))
    (ob-chat-ai-test-async text
      (buffer-enable-undo)
      (ob-chat-ai-test-execute "chat-ai")
      (ob-chat-ai-test-wait-for "\n: abc")
      (should (equal (buffer-string) text))
      (should-not (string-search "waiting for" (format "%S" buffer-undo-list)))
      (ob-chat-ai-test-release)
      (should (equal (ob-chat-ai-test-idle)
                     "#+begin_src chat-ai :model held\nabc\ndef\n#+end_src\n\n#+RESULTS:\n: abc\n: def\n\nAfter.\n")))))

;; The buffer made read-only while the reply streams: the reply cannot go in.
(ert-deftest ob-chat-ai-test-reply-that-cannot-go-in-still-ends-its-job ()
  (let ((text "#+begin_src chat-ai :model held :session s\none\n#+end_src\n
#+begin_src chat-ai :model m :session s\ntwo\n#+end_src\n"))
    (ob-chat-ai-test-async text
      (ob-chat-ai-test-execute "chat-ai")
      (ob-chat-ai-test-execute "^two")
      (ob-chat-ai-test-wait-for ": chat-ai: waiting for the earlier blocks of session s")
      (setq buffer-read-only t)
      (ob-chat-ai-test-release)
      (should (= 2 (length (ob-chat-ai-test-received 2))))
      (ob-chat-ai-test-idle)
      (setq buffer-read-only nil)
      (should (equal (ob-chat-ai-test-shown) text))
      (let ((messages (ob-chat-ai-test-messages)))
        (should (string-search "chat-ai: the reply could not be put in its block: Buffer is read-only"
                               messages))
        (should-not (string-search "Error running timer" messages))))))

(ert-deftest ob-chat-ai-test-invalid-request-leaves-the-buffer-untouched ()
  (dolist (header '(":temperature 9" ":n 0" ":stop '(a b c d e)"))
    (ob-chat-ai-test-async (format "#+begin_src chat-ai :model slow %s\nhi\n#+end_src\n" header)
      (let ((before (buffer-string)))
        (ob-chat-ai-test-user-error (lambda () (ob-chat-ai-test-execute "chat-ai")))
        (should (equal (buffer-string) before))
        (should-not ob-chat-ai--jobs)
        (should-not (ob-chat-ai-test-received))))))

(ert-deftest ob-chat-ai-test-tool-call-reply-says-so ()
  (dolist (async '(always nil))
    (ob-chat-ai-test-async "#+begin_src chat-ai :model tool_calls\nhi\n#+end_src\n"
      (let ((ob-chat-ai-async async))
        (ob-chat-ai-test-execute "chat-ai"))
      (should (string-suffix-p
               "#+RESULTS:\n: [chat-ai: the model asked to call a tool; this block offers no tools (:tools)]\n"
               (ob-chat-ai-test-idle))))))

(ert-deftest ob-chat-ai-test-choices-are-bounded-by-n ()
  (should (equal (ob-chat-ai--choice-texts '(((choice . 200000) (text . "x"))
                                             ((choice . 0) (text . "b"))
                                             ((choice . 0) (text . "a")))
                                           '((:n . 1)))
                 '("ab")))
  (should (equal (ob-chat-ai--choice-texts '(((choice . 1) (text . "c"))
                                             ((choice . 5) (text . "x"))
                                             ((choice . 0) (text . "a")))
                                           '((:n . 2)))
                 '("a" "c"))))

(ert-deftest ob-chat-ai-test-a-huge-one-line-reply-does-not-choke-font-lock ()
  (dolist (async '(always nil))
    (ob-chat-ai-test-async "#+begin_src chat-ai :model long-60000 :stream no\nhi\n#+end_src\n"
      (let ((ob-chat-ai-async async))
        (ob-chat-ai-test-execute "chat-ai"))
      (let ((text (ob-chat-ai-test-idle)))
        (should (string-search "#+RESULTS:\n#+begin_example\nword0 word1 " text))
        (should (string-match-p " word59999 ?\n#\\+end_example\n?\\'"
                                (substring text -100))))
      (font-lock-ensure)
      (should-not (local-variable-p 'org-babel-min-lines-for-block-output)))))

;;;; Tests: session history is what happened, Babel's header-arg tables, the key recipe

(defun ob-chat-ai-test-clear-received ()
  "Forget the requests the server received so far."
  (with-current-buffer (process-buffer ob-chat-ai-test-server) (erase-buffer)))

(ert-deftest ob-chat-ai-test-session-history-leaves-out-chat-ai-own-lines ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :session s :usage yes
abcd
#+end_src

#+begin_src chat-ai :model length :session s
cut short
#+end_src

#+begin_src chat-ai :model m :session s
last
#+end_src
"
    (org-babel-execute-buffer)
    (should (string-search ": [chat-ai: m, tokens 4 prompt" (buffer-string)))
    (should (string-search "[chat-ai: the reply stopped early: finish_reason length]"
                           (buffer-string)))
    (should (equal (ob-chat-ai-test-messages-sent (nth 2 (ob-chat-ai-test-received 3)))
                   '(("user" "abcd") ("assistant" "abcd")
                     ("user" "cut short") ("assistant" "cut short")
                     ("user" "last"))))))

(ert-deftest ob-chat-ai-test-session-refuses-to-go-on-after-an-unfinished-reply ()
  (dolist (case '(("cut" "chat-ai error: the connection closed mid-stream; \
the reply is incomplete")
                  ("error-500" "chat-ai error: HTTP 500 scenario_error")))
    (ob-chat-ai-test-with-org
        (format "#+begin_src chat-ai :model %s :session s
abcdefghijkl
#+end_src

#+begin_src chat-ai :model m :session s
next
#+end_src
" (car case))
      (should (string-search (cadr case) (ob-chat-ai-test-run)))
      (ob-chat-ai-test-clear-received)
      (let ((original (buffer-string))
            (message (ob-chat-ai-test-user-error #'ob-chat-ai-test-run-last)))
        (should (string-prefix-p (concat "chat-ai: The block at line 1, earlier in \
session s, has no whole reply (" (cadr case))
                                 message))
        (should (string-suffix-p "); run it again first" message))
        (should (equal (buffer-string) original))
        (should-not (ob-chat-ai-test-received)))))
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :session s
asked
#+end_src

#+RESULTS:
: partial text
: 
: [chat-ai: cancelled; the reply is incomplete]

#+begin_src chat-ai :model m :session s
next
#+end_src
"
    (should (string-search "has no whole reply ([chat-ai: cancelled; the reply is incomplete])"
                           (ob-chat-ai-test-user-error #'ob-chat-ai-test-run-last)))
    (should-not (ob-chat-ai-test-received))))

(ert-deftest ob-chat-ai-test-session-history-replays-the-body-as-it-was-sent ()
  (ob-chat-ai-test-with-org "#+name: topic
#+begin_src text
Org Babel
#+end_src

#+begin_src chat-ai :model m :session s :var who=\"a poet\" :noweb yes
As ${who}, tell me about <<topic>>.
#+end_src

#+begin_src chat-ai :model m :session s
And more?
#+end_src
"
    (re-search-forward "^#\\+begin_src chat-ai")
    (org-babel-execute-src-block)
    (ob-chat-ai-test-run-last)
    (should (equal (ob-chat-ai-test-messages-sent (nth 1 (ob-chat-ai-test-received 2)))
                   '(("user" "As a poet, tell me about Org Babel.")
                     ("assistant" "As a poet, tell me about Org Babel.")
                     ("user" "And more?"))))))

(ert-deftest ob-chat-ai-test-session-results-are-read-as-written ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model m :session s
q1
#+end_src

#+RESULTS:
: 1e3

#+begin_src chat-ai :model m :session s :results drawer
q2
#+end_src

#+RESULTS:
:results:
,* a line Org would read as a heading
:end:

#+begin_src chat-ai :model m :session s
q3
#+end_src
"
    (ob-chat-ai-test-run-last)
    (should (equal (ob-chat-ai-test-messages-sent)
                   '(("user" "q1") ("assistant" "1e3")
                     ("user" "q2") ("assistant" "* a line Org would read as a heading")
                     ("user" "q3"))))))

(defconst ob-chat-ai-test-session-of-three "* Trip
:PROPERTIES:
:header-args:chat-ai: :session trip :model slow
:END:
#+begin_src chat-ai
one
#+end_src

#+begin_src chat-ai
two
#+end_src

#+begin_src chat-ai
three
#+end_src
"
  "Three blocks of one session.")

(ert-deftest ob-chat-ai-test-session-blocks-wait-for-the-earlier-ones-async ()
  (ob-chat-ai-test-async ob-chat-ai-test-session-of-three
    (org-babel-execute-buffer)
    (should (= 1 (length ob-chat-ai--jobs)))
    (should (= 2 (length (seq-filter
                          (lambda (line)
                            (equal line ": chat-ai: waiting for the earlier blocks \
of session trip..."))
                          (split-string (ob-chat-ai-test-shown) "\n")))))
    (should-not (string-search "waiting" (buffer-string)))
    (let ((text (ob-chat-ai-test-idle))
          (requests (ob-chat-ai-test-received 3)))
      (should (= 3 (length requests)))
      (should (equal (ob-chat-ai-test-messages-sent (nth 1 requests))
                     '(("user" "one") ("assistant" "one") ("user" "two"))))
      (should (equal (ob-chat-ai-test-messages-sent (nth 2 requests))
                     '(("user" "one") ("assistant" "one") ("user" "two")
                       ("assistant" "two") ("user" "three"))))
      (should (string-suffix-p "#+begin_src chat-ai
three
#+end_src

#+RESULTS:
: three
" text))
      (should-not (string-search "waiting" text)))))

(ert-deftest ob-chat-ai-test-session-block-that-waited-is-sent-right-with-cache-yes ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model slow :session s
one
#+end_src

#+begin_src chat-ai :model slow :session s :cache yes
two
#+end_src
"
    (org-babel-execute-buffer)
    (let ((text (ob-chat-ai-test-idle)))
      (should (equal (ob-chat-ai-test-messages-sent (nth 1 (ob-chat-ai-test-received 2)))
                     '(("user" "one") ("assistant" "one") ("user" "two"))))
      (should-not (string-search "earlier blocks" text)))))

(ert-deftest ob-chat-ai-test-session-block-that-waited-appends-its-reply ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model slow :session s
one
#+end_src

#+begin_src chat-ai :model slow :session s :results append
two
#+end_src

#+RESULTS:
: an earlier answer
"
    (org-babel-execute-buffer)
    (should (string-suffix-p "#+RESULTS:\n: an earlier answer\n" (buffer-string)))
    (should (string-search "two
#+end_src
: chat-ai: waiting for the earlier blocks of session s...
" (ob-chat-ai-test-shown)))
    (should (string-suffix-p "#+RESULTS:\n: an earlier answer\n: two\n"
                             (ob-chat-ai-test-idle)))))

(ert-deftest ob-chat-ai-test-session-blocks-run-in-order-sync ()
  (ob-chat-ai-test-with-org ob-chat-ai-test-session-of-three
    (org-babel-execute-buffer)
    (should (equal (ob-chat-ai-test-messages-sent (nth 2 (ob-chat-ai-test-received 3)))
                   '(("user" "one") ("assistant" "one") ("user" "two")
                     ("assistant" "two") ("user" "three"))))))

(ert-deftest ob-chat-ai-test-session-block-that-cannot-wait-says-why ()
  (ob-chat-ai-test-async ob-chat-ai-test-session-of-three
    (ob-chat-ai-test-execute "^#\\+begin_src chat-ai\none")
    (should ob-chat-ai--jobs)
    (let ((original (buffer-string)))
      (goto-char (point-min))
      (re-search-forward "^#\\+begin_src chat-ai\ntwo")
      (should (equal (ob-chat-ai-test-user-error
                      (lambda () (org-babel-execute-src-block nil nil '((:async . "no")))))
                     "chat-ai: The block at line 5, earlier in session trip, is still \
answering; run this block when its reply is in"))
      (should (equal (buffer-string) original))
      (ob-chat-ai-test-idle)))
  (ob-chat-ai-test-async "#+begin_src chat-ai :model error-500 :max-retries 0 :session s
fails
#+end_src

#+begin_src chat-ai :model m :session s
waits, then cannot go on
#+end_src
"
    (org-babel-execute-buffer)
    (should (string-search ": chat-ai: waiting for the earlier blocks of session s..."
                           (ob-chat-ai-test-shown)))
    (should-not (string-search "waiting" (buffer-string)))
    (should (string-suffix-p "#+RESULTS:
: chat-ai error: The block at line 1, earlier in session s, has no whole reply \
\(chat-ai error: HTTP 500 scenario_error: Scenario error 500; you sent no key. \
\(the server failed; try again later)); run it again first
" (ob-chat-ai-test-idle)))
    (should (= 1 (length (ob-chat-ai-test-received 1))))))

(defconst ob-chat-ai-test-held-session
  "#+begin_src chat-ai :model held :session s
first
#+end_src

#+begin_src chat-ai :model m :session s
second
#+end_src

#+RESULTS:
: an earlier answer
"
  "A session whose first block the server holds, and whose second waits for it.")

(ert-deftest ob-chat-ai-test-cancel-stops-a-block-waiting-for-its-session ()
  (ob-chat-ai-test-async ob-chat-ai-test-held-session
    (org-babel-execute-buffer)
    (should (string-search ": chat-ai: waiting for the earlier blocks of session s..."
                           (ob-chat-ai-test-shown)))
    (ob-chat-ai-test-received 1)
    (goto-char (point-min))
    (re-search-forward "^second")
    (ob-chat-ai-cancel)
    (should-not (string-search "waiting for the earlier" (ob-chat-ai-test-shown)))
    (ob-chat-ai-test-release)
    (should (string-suffix-p "second\n#+end_src\n\n#+RESULTS:\n: an earlier answer\n"
                             (ob-chat-ai-test-idle)))
    (should (= 1 (length (ob-chat-ai-test-received 1))))))

(ert-deftest ob-chat-ai-test-cancel-all-stops-the-blocks-waiting-for-their-session ()
  (ob-chat-ai-test-async ob-chat-ai-test-held-session
    (org-babel-execute-buffer)
    (ob-chat-ai-test-received 1)
    (ob-chat-ai-cancel-all)
    (should (string-suffix-p "chat-ai: cancelled 2 requests\n" (ob-chat-ai-test-messages)))
    (should-not (string-search "waiting for the earlier" (ob-chat-ai-test-shown)))
    (should (string-suffix-p "second\n#+end_src\n\n#+RESULTS:\n: an earlier answer\n"
                             (ob-chat-ai-test-idle)))
    (should (= 1 (length (ob-chat-ai-test-received 1))))))

;; Reading the sessions of a document parses all of it; a reply without
;; a :session cannot let a waiting block go on, and must not make it.
(ert-deftest ob-chat-ai-test-replies-outside-sessions-do-not-read-the-sessions-again ()
  (ob-chat-ai-test-async
      (concat "#+begin_src chat-ai :model held :session s\nfirst\n#+end_src\n\n"
              "#+begin_src chat-ai :model m :session s\nsecond\n#+end_src\n\n"
              (mapconcat (lambda (i) (format "#+begin_src chat-ai :model m\nq%d\n#+end_src\n" i))
                         (number-sequence 1 10) "\n"))
    (org-babel-execute-buffer)
    (should (string-search ": chat-ai: waiting for the earlier blocks of session s..."
                           (ob-chat-ai-test-shown)))
    (let ((reads 0))
      (let ((count (lambda (&rest _) (cl-incf reads))))
        (advice-add 'ob-chat-ai-messages--read-blocks :before count)
        (unwind-protect
            (ob-chat-ai-test-wait
             (lambda () (string-search "q10\n#+end_src\n\n#+RESULTS:\n: q10\n" (buffer-string))))
          (advice-remove 'ob-chat-ai-messages--read-blocks count)))
      (should (= reads 0)))
    (ob-chat-ai-test-release)
    (should (string-search "second\n#+end_src\n\n#+RESULTS:\n: second\n" (ob-chat-ai-test-idle)))
    (should (equal (ob-chat-ai-test-messages-sent (nth 11 (ob-chat-ai-test-received 12)))
                   '(("user" "first") ("assistant" "first") ("user" "second"))))))

(ert-deftest ob-chat-ai-test-block-run-again-to-wait-for-its-session-drops-its-request ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model held :session s
first
#+end_src

#+begin_src chat-ai :model held :session s :results append
second
#+end_src
"
    (ob-chat-ai-test-execute "^second")
    (ob-chat-ai-test-received 1)
    (ob-chat-ai-test-execute "^first")
    (ob-chat-ai-test-received 2)
    (ob-chat-ai-test-execute "^second")
    (should (string-search ": chat-ai: waiting for the earlier blocks of session s..."
                           (ob-chat-ai-test-shown)))
    (ob-chat-ai-test-release)
    (should (string-suffix-p "second\n#+end_src\n\n#+RESULTS:\n: second\n" (ob-chat-ai-test-idle)))
    (should (equal (ob-chat-ai-test-messages-sent (nth 2 (ob-chat-ai-test-received 3)))
                   '(("user" "first") ("assistant" "first") ("user" "second"))))))

(ert-deftest ob-chat-ai-test-header-arg-values-complete-as-babel-expects ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai\nhi\n#+end_src\n"
    (let* ((offered nil)
           (header nil)
           (completing-read-function
            (lambda (_prompt collection &rest _)
              (let ((choices (remove "default" (all-completions "" collection))))
                (push choices offered)
                (if (member header choices) header (car choices))))))
      (dolist (name '("format" "async" "usage" "dry-run" "role-system" "stream" "store"))
        (setq header name)
        (setq offered nil)
        (goto-char (point-min))
        (org-babel-insert-header-arg header)
        (should (member (car (car offered)) '("yes" "markdown" "system")))
        (should (string-search (format ":%s %s" header (car (car offered)))
                               (buffer-string)))
        (setq offered nil)
        (goto-char (point-min))
        (end-of-line)
        (insert " :")
        (org-babel-enter-header-arg-w-completion "chat-ai")
        (should (member header (car (last offered))))
        (should (member (car (car offered)) '("yes" "markdown" "system")))))
    (goto-char (point-min))
    (should (string-prefix-p "#+begin_src chat-ai :format markdown :format markdown \
:async yes :async yes :usage yes :usage yes :dry-run yes :dry-run yes :role-system system \
:role-system system :stream yes :stream yes :store yes :store yes\n"
                             (replace-regexp-in-string " +" " " (buffer-string))))))

(ert-deftest ob-chat-ai-test-lint-and-reader-agree-on-yes-and-no ()
  (require 'org-lint)
  (dolist (word '("yes" "no"))
    (let ((yes (equal word "yes")))
      (ob-chat-ai-test-with-org
          (format "#+begin_src chat-ai :model m :stream %s :store %s :usage %s :async %s
hi
#+end_src

#+begin_src chat-ai :model m :dry-run %s
hi
#+end_src
" word word word word word)
        (should-not (seq-filter (lambda (report)
                                  (string-search "Unknown value" (format "%s" report)))
                                (org-lint)))
        (let ((result (ob-chat-ai-test-run))
              (body (ob-chat-ai-test-body)))
          (should (eq (alist-get 'stream body) (if yes t :false)))
          (should (eq (alist-get 'store body) (if yes t :false)))
          (should (eq yes (and (string-search "[chat-ai: m, tokens" result) t))))
        (ob-chat-ai-test-clear-received)
        (ob-chat-ai-test-run-last)
        (if yes
            (should-not (ob-chat-ai-test-received))
          (should (= 1 (length (ob-chat-ai-test-received 1))))))))
  (dolist (word '("t" "nil" "true" "false" "on"))
    (dolist (header '(":stream" ":store" ":usage" ":async" ":dry-run"))
      (ob-chat-ai-test-with-org
          (format "#+begin_src chat-ai :model m %s %s\nhi\n#+end_src\n" header word)
        (should (string-search (format "Unknown value \"%s\" for header \"%s\""
                                       word header)
                               (format "%s" (org-lint))))
        (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run)
                       (format "chat-ai: %s must be yes or no, not %s" header word)))
        (should-not (ob-chat-ai-test-received))))))

(ert-deftest ob-chat-ai-test-every-header-value-is-checked-before-sending ()
  (dolist (case '((":format html" "chat-ai: :format must be markdown or org, not html")
                  (":usage maybe" "chat-ai: :usage must be yes or no, not maybe")
                  (":dry-run yess" "chat-ai: :dry-run must be yes or no, not yess")
                  (":async later" "chat-ai: :async must be yes or no, not later")
                  (":role-system boss" "chat-ai: :role-system must be system or \
developer, not boss")))
    (dolist (stream '("yes" "no"))
      (ob-chat-ai-test-with-org
          (format "#+begin_src chat-ai :model m :stream %s %s\nhi\n#+end_src\n"
                  stream (car case))
        (let ((original (buffer-string)))
          (should (equal (ob-chat-ai-test-user-error #'ob-chat-ai-test-run) (cadr case)))
          (should (equal (buffer-string) original))
          (should-not (ob-chat-ai-test-received)))))))

(defun ob-chat-ai-test-readme-key-recipe ()
  "Return the README's key recipe as Org text, with the test key in it."
  (with-temp-buffer
    (insert-file-contents (expand-file-name "README.org" ob-chat-ai-test-root))
    (org-mode)
    (search-forward "#+name: OPENAI_API_KEY")
    (let ((recipe (org-unescape-code-in-string
                   (nth 1 (org-babel-get-src-block-info 'no-eval)))))
      (should (string-search "sk-..." recipe))
      (string-replace "sk-..." ob-chat-ai-test-key recipe))))

(ert-deftest ob-chat-ai-test-readme-key-recipe-survives-execute-buffer-and-export ()
  (ob-chat-ai-test-with-org (ob-chat-ai-test-readme-key-recipe)
    (org-babel-execute-buffer)
    (should (equal (ob-chat-ai-test-authorization) (concat "Bearer " ob-chat-ai-test-key)))
    (should (string-suffix-p "#+RESULTS:\n: Hello!\n" (buffer-string)))
    (should (= 1 (how-many (regexp-quote ob-chat-ai-test-key) (point-min) (point-max)))))
  (ob-chat-ai-test-with-org (ob-chat-ai-test-readme-key-recipe)
    (goto-char (point-min))
    (re-search-forward "^#\\+begin_src chat-ai.*")
    (insert " :exports both")
    (require 'ox-ascii)
    (let ((exported (org-export-as 'ascii)))
      (should (string-search "Hello!" exported))
      (should-not (string-search ob-chat-ai-test-key exported)))
    (should (equal (ob-chat-ai-test-authorization) (concat "Bearer " ob-chat-ai-test-key)))))

;;;; Tests: found by trying to break issue 11's promises

(ert-deftest ob-chat-ai-test-var-reference-leaves-a-streaming-reply-alone ()
  (ob-chat-ai-test-async "#+name: other
#+begin_src chat-ai :model slow
hello from other
#+end_src

#+begin_src emacs-lisp :var x=other()
(concat \"got: \" x)
#+end_src
"
    (re-search-forward "hello")
    (org-ctrl-c-ctrl-c)
    (ob-chat-ai-test-wait-for ": hel")
    (re-search-forward "concat")
    (org-ctrl-c-ctrl-c)
    (should (equal (ob-chat-ai-test-idle)
                   "#+name: other
#+begin_src chat-ai :model slow
hello from other
#+end_src

#+RESULTS: other
: hello from other

#+begin_src emacs-lisp :var x=other()
(concat \"got: \" x)
#+end_src

#+RESULTS:
: got: hello from other
"))))

(ert-deftest ob-chat-ai-test-narrowing-mid-stream-keeps-the-reply ()
  (ob-chat-ai-test-async "* A
#+begin_src chat-ai :model held
abcdefghijkl
#+end_src

* B
notes
"
    (re-search-forward "abc")
    (org-ctrl-c-ctrl-c)
    (ob-chat-ai-test-wait-for ": abc")
    (re-search-forward "^\\* B")
    (org-narrow-to-subtree)
    (should ob-chat-ai--jobs)
    (ob-chat-ai-test-release)
    (ob-chat-ai-test-idle)
    (should (equal (buffer-string) "* B\nnotes\n"))
    (widen)
    (should (equal (buffer-string) "* A
#+begin_src chat-ai :model held
abcdefghijkl
#+end_src

#+RESULTS:
: abcdefghijkl

* B
notes
"))))

(ert-deftest ob-chat-ai-test-blocks-waiting-for-their-session-leave-the-file-alone ()
  (let* ((text "#+begin_src chat-ai :session s :model slow
one
#+end_src

#+begin_src chat-ai :session s :model slow
two
#+end_src

#+RESULTS:
: old two
")
         (file (make-temp-file "chat-ai" nil ".org" text)))
    (ob-chat-ai-test-async ""
      (with-current-buffer (find-file-noselect file)
        (unwind-protect
            (progn
              (org-babel-execute-buffer)
              (should (string-search ": chat-ai: waiting for the earlier blocks \
of session s..." (ob-chat-ai-test-shown)))
              (set-buffer-modified-p t)
              (save-buffer)
              (should (equal (with-temp-buffer
                               (insert-file-contents file)
                               (buffer-string))
                             text))
              (should (string-suffix-p "#+RESULTS:\n: two\n" (ob-chat-ai-test-idle)))
              (undo-boundary)
              (undo)
              (should (string-suffix-p "#+RESULTS:\n: old two\n" (buffer-string))))
          (set-buffer-modified-p nil)
          (kill-buffer)
          (delete-file file))))))

;;;; Reasoning models

(ert-deftest ob-chat-ai-test-reasoning-hidden-by-default ()
  (dolist (model '("reasoning_content" "reasoning" "think-tag"))
    (dolist (stream '("yes" "no"))
      (ob-chat-ai-test-with-org
          (format "#+begin_src chat-ai :model %s :stream %s\nWhy?\n#+end_src\n"
                  model stream)
        (should (equal (ob-chat-ai-test-run) "Why?"))
        (should-not (string-search "Let me think" (buffer-string)))))))

(ert-deftest ob-chat-ai-test-reasoning-yes-shows-the-thinking-folded-before-the-answer ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model think-tag :reasoning yes :results drawer
Why?
,* not a heading
:end:
#+end_src
"
    (ob-chat-ai-test-run)
    (should (string-suffix-p "#+RESULTS:
:results:
#+begin_reasoning
Let me think: Why?
,* not a heading
,:end:
#+end_reasoning

Why?
,* not a heading
,:end:
:end:
" (buffer-string)))
    (goto-char (point-min))
    (search-forward "Let me think")
    (should (org-invisible-p))
    (search-forward "#+end_reasoning\n\nWhy?")
    (should-not (org-invisible-p))))

(defun ob-chat-ai-test-result-of (search)
  "Return the result text, as it is in the buffer, of the block matching SEARCH."
  (save-excursion
    (goto-char (point-min))
    (re-search-forward search)
    (goto-char (org-babel-where-is-src-block-result))
    (forward-line)
    (buffer-substring-no-properties (point) (org-babel-result-end))))

;; Before: with the default results the thinking showed as fixed-width
;; text, never folded, and a table or list result lost the answer to it.
(ert-deftest ob-chat-ai-test-reasoning-yes-in-every-results-style ()
  (dolist (async '(nil always))
    (let ((ob-chat-ai-async async))
      (pcase-dolist (`(,results ,expected)
                     '(("" ":results:\n#+begin_reasoning\nLet me think: Where?\n#+end_reasoning\n\nWhere?\n:end:\n")
                       (":results output" ":results:\n#+begin_reasoning\nLet me think: Where?\n#+end_reasoning\n\nWhere?\n:end:\n")
                       (":results verbatim" ": Where?\n")
                       (":results table" "| Where? |\n")
                       (":results list" ": - Where?\n")
                       (":results html" "#+begin_export html\nWhere?\n#+end_export\n")
                       (":wrap example" "#+begin_example\nWhere?\n#+end_example\n")))
        (ob-chat-ai-test-with-org
            (format "#+begin_src chat-ai :model reasoning_content :reasoning yes %s
Where?
#+end_src
" results)
          (unwind-protect
              (progn
                (goto-char (point-min))
                (re-search-forward "^#\\+begin_src chat-ai")
                (org-babel-execute-src-block)
                (ob-chat-ai-test-idle))
            (ob-chat-ai-cancel-all))
          (should (equal (cons results (ob-chat-ai-test-result-of "^#\\+begin_src"))
                         (cons results expected)))
          (goto-char (point-min))
          (when (search-forward "Let me think" nil t)
            (should (org-invisible-p))))))))

(ert-deftest ob-chat-ai-test-reasoning-post-and-cache-see-the-answer-alone ()
  (ob-chat-ai-test-with-org "#+name: seen
#+begin_src emacs-lisp :var x=\"\"
(format \"post saw: %s\" x)
#+end_src

#+name: cached
#+begin_src chat-ai :model reasoning_content :reasoning yes :cache yes
Where?
#+end_src

#+begin_src chat-ai :model reasoning_content :reasoning yes :post seen(x=*this*)
Why?
#+end_src

#+begin_src chat-ai :model m :var answer=cached
Said: $answer
#+end_src
"
    (org-babel-lob-ingest)
    (ob-chat-ai-test-execute "chat-ai :model reasoning_content :reasoning yes :cache")
    (should (equal (ob-chat-ai-test-result-of "^#\\+name: cached") ": Where?\n"))
    (ob-chat-ai-test-execute ":post seen")
    (should (equal (ob-chat-ai-test-result-of ":post seen") ": post saw: Why?\n"))
    (should-not (string-search "Let me think" (buffer-string)))
    (ob-chat-ai-test-clear-received)
    (ob-chat-ai-test-execute ":var answer=cached")
    (should (equal (ob-chat-ai-test-messages-sent
                    (car (last (ob-chat-ai-test-received 1))))
                   '(("user" "Said: Where?"))))))

(ert-deftest ob-chat-ai-test-reasoning-stays-out-of-session-history-and-var ()
  (ob-chat-ai-test-with-org "#+name: thinker
#+begin_src chat-ai :model reasoning_content :reasoning yes :session s :results drawer
Where?
#+end_src

#+RESULTS:

#+begin_src chat-ai :model m :session s
And then?
#+end_src

#+begin_src chat-ai :model m :var answer=thinker
Said: $answer
#+end_src
"
    (ob-chat-ai-test-run)
    (should (string-search ":results:\n#+begin_reasoning\nLet me think: Where?\n#+end_reasoning\n\nWhere?\n:end:"
                           (buffer-string)))
    (ob-chat-ai-test-clear-received)
    (ob-chat-ai-test-execute "chat-ai :model m :session s")
    (should (equal (ob-chat-ai-test-messages-sent)
                   '(("user" "Where?") ("assistant" "Where?") ("user" "And then?"))))
    (ob-chat-ai-test-clear-received)
    (ob-chat-ai-test-execute ":var answer")
    (should (equal (ob-chat-ai-test-messages-sent
                    (car (last (ob-chat-ai-test-received 2))))
                   '(("user" "Said: Where?"))))))

(ert-deftest ob-chat-ai-test-reasoning-format-org-converts-the-answer-alone ()
  (ob-chat-ai-test-with-org "#+begin_src chat-ai :model reasoning :reasoning yes :format org :results raw
**bold**
#+end_src
"
    (ob-chat-ai-test-run)
    (should (string-search "#+begin_reasoning\nLet me think: **bold**\n#+end_reasoning\n\n*bold*"
                           (buffer-string)))))

(ert-deftest ob-chat-ai-test-async-placeholder-counts-the-thinking ()
  (ob-chat-ai-test-async "#+begin_src chat-ai :model held-reasoning_content
A question long enough to think about for a while
#+end_src
"
    (ob-chat-ai-test-execute "chat-ai")
    (ob-chat-ai-test-wait-for ": chat-ai: thinking… ")
    (should (string-match-p ": chat-ai: thinking… [0-9,]+ chars" (ob-chat-ai-test-shown)))
    (ob-chat-ai-test-release)
    (should (string-suffix-p
             "#+RESULTS:\n: A question long enough to think about for a while\n"
             (ob-chat-ai-test-idle)))))

(ert-deftest ob-chat-ai-test-thinking-count-groups-thousands ()
  (should (equal (ob-chat-ai-reply-thinking 1234) "chat-ai: thinking… 1,234 chars"))
  (should (equal (ob-chat-ai-reply-thinking 1234567) "chat-ai: thinking… 1,234,567 chars"))
  (should (equal (ob-chat-ai-reply-thinking 12) "chat-ai: thinking… 12 chars")))

;;;; Usage and cost

(ert-deftest ob-chat-ai-test-usage-yes-shows-the-cost-and-the-log-names-the-block ()
  (let ((prices (expand-file-name "chat-ai/prices.json" (getenv "XDG_CONFIG_HOME")))
        (file (expand-file-name "costly.org" (make-temp-file "chat-ai-org" t))))
    (make-directory (file-name-directory prices) t)
    (with-temp-file prices
      (insert "{\"priced-m\": {\"input\": 1000000, \"output\": 2000000}}"))
    (unwind-protect
        (ob-chat-ai-test-with-org "#+name: costly
#+begin_src chat-ai :model priced-m :usage yes
abcd
#+end_src
"
          (setq buffer-file-name file)
          (should (equal (ob-chat-ai-test-run)
                         "abcd\n\n[chat-ai: priced-m, tokens 4 prompt + 4 completion = 8, $12.0000, finish_reason stop]"))
          (set-buffer-modified-p nil)
          (setq buffer-file-name nil)
          (let ((report (with-temp-buffer
                          (call-process ob-chat-ai-test-python nil t nil
                                        "-m" "chat_ai_helper" "usage" "--json"
                                        "--by-block" "--file" file)
                          (goto-char (point-min))
                          (json-parse-buffer :object-type 'alist :null-object nil))))
            (should (equal (mapcar (lambda (row)
                                     (list (alist-get 'block row) (alist-get 'requests row)
                                           (alist-get 'cost row)))
                                   (alist-get 'totals report))
                           '(("costly" 1 12.0))))))
      (delete-file prices))))

(ert-deftest ob-chat-ai-test-usage-command-totals-the-file-by-block ()
  (let* ((prices (expand-file-name "chat-ai/prices.json" (getenv "XDG_CONFIG_HOME")))
         (file (expand-file-name "totals.org" (make-temp-file "chat-ai-org" t))))
    (make-directory (file-name-directory prices) t)
    (with-temp-file prices
      (insert "{\"priced-m\": {\"input\": 1000000, \"output\": 1000000}}"))
    (unwind-protect
        (ob-chat-ai-test-with-org "#+name: first
#+begin_src chat-ai :model priced-m
abcd
#+end_src

#+name: second
#+begin_src chat-ai :model unpriced-m
ab
#+end_src
"
          (setq buffer-file-name file)
          (ob-chat-ai-test-execute "^#\\+begin_src chat-ai :model priced-m")
          (ob-chat-ai-test-execute "^#\\+begin_src chat-ai :model priced-m")
          (ob-chat-ai-test-execute "^#\\+begin_src chat-ai :model unpriced-m")
          (set-buffer-modified-p nil)
          (let ((table (with-current-buffer (ob-chat-ai-usage)
                         (buffer-string))))
            (setq buffer-file-name nil)
            (should (string-match-p
                     "^| first +| priced-m +| +2 | +8 | +8 | +0 | +16 | \\$16\\.0000 +|$"
                     table))
            (should (string-match-p
                     "^| second +| unpriced-m +| +1 | +2 | +2 | +0 | +4 | price unknown +|$"
                     table))
            (should (string-match-p
                     "^| total +| +| +3 | +10 | +10 | +0 | +20 | \\$16\\.0000 (\\+1 unpriced) +|$"
                     table))))
      (delete-file prices))))

(provide 'test-ob-chat-ai)

;;; test-ob-chat-ai.el ends here
